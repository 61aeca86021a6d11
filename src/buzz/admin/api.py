"""The operator's API under `/admin/api/`: keys, projects, limits and balances, as JSON.

Protected by the operator token in `BUZZ_ADMIN_TOKEN` (`Authorization: Bearer …`); without one
configured, the admin API does not exist. Changes take effect on the gateway's next request,
exactly as the same changes made with the CLI.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from buzz.asgi import Receive, Scope, Send, header_map, send_response
from buzz.counters import Counters
from buzz.errors import GatewayError, Kind, send_error
from buzz.limits.base import Limiter, Limits
from buzz.proxy.auth import generate_key
from buzz.routes import Surface
from buzz.store.base import KeyRecord, ProjectRecord
from buzz.store.sqlite import SQLiteStore

PREFIX = "/admin/api"
_NANOS_PER_USD = Decimal(1_000_000_000)
_COUNTS = ("rpm", "itpm", "otpm", "concurrency")
_MONEY = {"daily_usd": "daily_nanos", "monthly_usd": "monthly_nanos"}
_MAX_BODY = 64 * 1024


def _usd_nanos(value: object, field: str) -> int | None:
    if value is None:
        return None
    try:
        amount = Decimal(str(value)) * _NANOS_PER_USD
    except InvalidOperation as exc:
        raise GatewayError(Kind.INVALID_REQUEST, f"{field}: an amount in USD") from exc
    if amount != amount.to_integral_value():
        raise GatewayError(Kind.INVALID_REQUEST, f"{field}: more precision than a nano-dollar")
    return int(amount)


def _usd(nanos: int | None) -> str | None:
    return None if nanos is None else str(Decimal(nanos) / _NANOS_PER_USD)


def _limit_changes(document: dict[str, Any]) -> dict[str, object]:
    changes: dict[str, object] = {}
    for name in _COUNTS:
        if name in document:
            value = document[name]
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise GatewayError(Kind.INVALID_REQUEST, f"{name}: a whole number or null")
            changes[name] = value
    for name, column in _MONEY.items():
        if name in document:
            changes[column] = _usd_nanos(document[name], name)
    return changes


def _limits_json(limits: Limits) -> dict[str, object]:
    return {
        **{name: getattr(limits, name) for name in _COUNTS},
        "daily_usd": _usd(limits.daily_nanos),
        "monthly_usd": _usd(limits.monthly_nanos),
    }


def _key_json(record: KeyRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "project": record.project,
        "name": record.name,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
        "expires_at": record.expires_at,
        "models": list(record.allowed_models) if record.allowed_models is not None else None,
        "limits": _limits_json(record.limits),
    }


def _project_json(record: ProjectRecord, balance_nanos: int | None = None) -> dict[str, object]:
    balance = record.balance_nanos if balance_nanos is None else balance_nanos
    return {
        "name": record.name,
        "prepaid": record.prepaid,
        "balance_usd": _usd(balance),
        "limits": _limits_json(record.limits),
        "created_at": record.created_at,
    }


class AdminAPI:
    def __init__(
        self,
        token: str | None,
        store: SQLiteStore,
        limiter: Limiter,
        counters: Counters,
        changed: Callable[[], None],
    ) -> None:
        self._token = token
        self._counters = counters
        self._store = store
        self._limiter = limiter
        self._changed = changed  # the request path must reread keys and limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self._authorize(header_map(scope["headers"]))
            body = await _read(receive)
            status, document = await self._route(scope["method"], scope["path"][len(PREFIX) :], body)
            if scope["method"] != "GET":
                self._changed()
        except GatewayError as error:
            await send_error(send, error, "admin", Surface.OPENAI)
            return
        await send_response(send, status, msgspec.json.encode(document), b"application/json")

    def _authorize(self, headers: dict[bytes, bytes]) -> None:
        if not self._token:
            raise GatewayError(Kind.NOT_FOUND, "the admin API is off: set BUZZ_ADMIN_TOKEN to turn it on")
        given = headers.get(b"authorization", b"").removeprefix(b"Bearer ").strip()
        if not hmac.compare_digest(given, self._token.encode()):
            raise GatewayError(Kind.AUTHENTICATION, "admin API: wrong or missing operator token")

    async def _route(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, object]:
        store = self._store
        if path == "/projects" and method == "GET":
            return 200, {"data": [_project_json(p, await self._balance(p)) for p in store.list_projects()]}
        if path == "/projects" and method == "POST":
            name = _text(body, "name")
            changes = {**_limit_changes(body), "prepaid": int(bool(body.get("prepaid", False)))}
            return 201, _project_json(_save(store, name, changes, create=True))
        if (match := re.fullmatch(r"/projects/([^/]+)", path)) and method == "PATCH":
            changes = _limit_changes(body)
            if "prepaid" in body:
                changes["prepaid"] = int(bool(body["prepaid"]))
            return 200, _project_json(_save(store, match[1], changes, create=False))
        if (match := re.fullmatch(r"/projects/([^/]+)/balance", path)) and method == "POST":
            nanos = _usd_nanos(body.get("usd"), "usd")
            if nanos is None:
                raise GatewayError(Kind.INVALID_REQUEST, "usd: the amount to add (negative to correct)")
            project = store.project(match[1])
            if project is None:
                raise GatewayError(Kind.NOT_FOUND, f"no project {match[1]!r}")
            # Through the limiter: it holds the live balance (and writes it through to SQLite).
            return 200, _project_json(project, await self._limiter.add_balance(project.name, nanos))
        if path == "/counters" and method == "GET":
            return 200, self._counters.snapshot()
        if path == "/keys" and method == "GET":
            return 200, {"data": [_key_json(k) for k in store.list_keys()]}
        if path == "/keys" and method == "POST":
            new = generate_key()
            record = store.create_key(
                new.key_id,
                _text(body, "project"),
                body.get("name"),
                new.secret_hash,
                Limits(**{k: v for k, v in _limit_changes(body).items()}),  # type: ignore[arg-type]
                body.get("expires_at"),
                body.get("models"),
            )
            return 201, {**_key_json(record), "key": new.token}  # the secret, this once
        if (match := re.fullmatch(r"/keys/([^/]+)", path)) and method == "PATCH":
            changes = _limit_changes(body)
            for field, column in (("name", "name"), ("expires_at", "expires_at"), ("models", "allowed_models")):
                if field in body:
                    changes[column] = body[field]
            updated = store.update_key(match[1], changes)
            if updated is None:
                raise GatewayError(Kind.NOT_FOUND, f"no key {match[1]!r}")
            return 200, _key_json(updated)
        if (match := re.fullmatch(r"/keys/([^/]+)/revoke", path)) and method == "POST":
            if not store.revoke_key(match[1]):
                raise GatewayError(Kind.NOT_FOUND, f"no active key {match[1]!r}")
            return 200, {"id": match[1], "revoked": True}
        raise GatewayError(Kind.NOT_FOUND, f"no admin route {method} {PREFIX}{path}")

    async def _balance(self, project: ProjectRecord) -> int:
        # The limiter's figure is the live one (SQLite's lags by up to one ledger batch).
        return await self._limiter.balance(project.name)


def _save(store: SQLiteStore, name: str, changes: dict[str, object], create: bool) -> ProjectRecord:
    try:
        return store.save_project(name, changes, create)
    except ValueError as exc:
        raise GatewayError(Kind.INVALID_REQUEST if create else Kind.NOT_FOUND, str(exc)) from exc


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise GatewayError(Kind.INVALID_REQUEST, f"{field}: required, a string")
    return value


async def _read(receive: Receive) -> dict[str, Any]:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise GatewayError(Kind.TOO_LARGE, "admin requests are small JSON documents")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    data = b"".join(chunks)
    if not data.strip():
        return {}
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise GatewayError(Kind.INVALID_REQUEST, "request body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise GatewayError(Kind.INVALID_REQUEST, "request body must be a JSON object")
    return document
