"""The operator's API under `/admin/api/`: keys, projects, limits and balances, as JSON.

Protected by the operator token in `BUZZ_ADMIN_TOKEN` (`Authorization: Bearer …`); without one
configured, the admin API does not exist. Changes take effect on the gateway's next request,
exactly as the same changes made with the CLI.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
from collections.abc import Callable, Sequence

import msgspec

from buzz import console_tokens
from buzz.admin.usage import ROUTES as USAGE_ROUTES
from buzz.admin.usage import UsageAPI
from buzz.asgi import Receive, Scope, Send, header_map, send_response
from buzz.changes import (
    BalanceChange,
    InvalidChange,
    KeyChanges,
    NewConsoleToken,
    NewKey,
    NewProject,
    ProjectChanges,
    decode,
    rfc3339,
)
from buzz.counters import Counters
from buzz.errors import GatewayError, Kind, send_error, where
from buzz.limits.base import Limiter, Limits
from buzz.money import usd_exact
from buzz.pools.base import CredentialView
from buzz.proxy.auth import generate_key
from buzz.routes import Surface
from buzz.store.base import ConsoleTokenRecord, KeyRecord, ProjectRecord, Store, StoreUnavailable

PREFIX = "/admin/api"
log = logging.getLogger("buzz.admin")
_COUNTS = ("rpm", "itpm", "otpm", "concurrency")
_MAX_BODY = 64 * 1024


def _usd(nanos: int | None) -> str | None:
    return None if nanos is None else usd_exact(nanos)


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
        "expires_at": None if record.expires_at is None else rfc3339(record.expires_at),
        "models": list(record.allowed_models) if record.allowed_models is not None else None,
        "limits": _limits_json(record.limits),
    }


def _token_json(record: ConsoleTokenRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "project": record.project,
        "name": record.name,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }


def credential_json(view: CredentialView) -> dict[str, object]:
    """One upstream credential's state; never its key."""
    return {
        "provider": view.provider,
        "name": view.name,
        "weight": view.weight,
        "base_url": view.base_url,
        "state": view.state,
        "cause": view.cause,
        # A hold's end; for a disabled credential, its next probe (null: it is not probed).
        "until": None if view.until is None else rfc3339(math.ceil(view.until)),
        "since": None if view.since is None else rfc3339(math.floor(view.since)),
        "in_flight": view.in_flight,
        "headroom": view.headroom,
        "cooldowns": dict(view.cooldowns),
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
        store: Store,
        limiter: Limiter,
        counters: Counters,
        changed: Callable[[], None],
        wall_clock: Callable[[], float],
        raw_rows_limit: int,
        credentials: Callable[[], Sequence[CredentialView]] = lambda: (),
        restore: Callable[[str, str], bool] = lambda provider, name: False,
    ) -> None:
        self._token = token
        self._credentials = credentials
        self._restore = restore
        self._usage = UsageAPI(token, store, wall_clock, raw_rows_limit)
        self._counters = counters
        self._store = store
        self._limiter = limiter
        self._changed = changed  # the request path must reread keys and limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"][len(PREFIX) :]
        try:
            if path in USAGE_ROUTES:  # readable with a project's console token as well
                await self._usage(scope, path, receive, send)
                return
            self._authorize(header_map(scope["headers"]))
            body = await _read(receive)
            try:
                status, document = await self._route(scope["method"], path, body)
            except InvalidChange as exc:
                raise GatewayError(Kind.INVALID_REQUEST, str(exc)) from None
            if scope["method"] != "GET":
                self._changed()
        except GatewayError as error:
            await send_error(send, error, "admin", Surface.OPENAI)
            return
        except StoreUnavailable:
            unreachable = GatewayError(Kind.UNAVAILABLE, "the database is unreachable; try again shortly")
            await send_error(send, unreachable, "admin", Surface.OPENAI)
            return
        except Exception as exc:
            # Its message could quote the request: only its type and place are logged.
            log.error("admin API internal error %s at %s", type(exc).__name__, where(exc))
            await send_error(send, GatewayError(Kind.INTERNAL, "internal gateway error"), "admin", Surface.OPENAI)
            return
        await send_response(send, status, msgspec.json.encode(document), b"application/json")

    def _authorize(self, headers: dict[bytes, bytes]) -> None:
        if not self._token:
            raise GatewayError(Kind.NOT_FOUND, "the admin API is off: set BUZZ_ADMIN_TOKEN to turn it on")
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        # The scheme is required: a bare token in the header is a client that would also send it
        # elsewhere by mistake, and RFC 9110 makes the scheme case-insensitive.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token.encode()):
            raise GatewayError(Kind.AUTHENTICATION, "admin API: send the operator token as Authorization: Bearer")

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        store = self._store
        if path == "/projects" and method == "GET":
            return 200, {"data": [_project_json(p, await self._limiter.balance(p.name)) for p in store.list_projects()]}
        if path == "/projects" and method == "POST":
            project_in = decode(body, NewProject)
            changes = project_in.columns()
            changes.setdefault("prepaid", 0)
            return 201, _project_json(_save(store, project_in.name, changes, create=True))
        if (match := re.fullmatch(r"/projects/([^/]+)", path)) and method == "PATCH":
            return 200, _project_json(_save(store, match[1], decode(body, ProjectChanges).columns(), create=False))
        if (match := re.fullmatch(r"/projects/([^/]+)/balance", path)) and method == "POST":
            nanos = decode(body, BalanceChange).nanos
            project = await store.find_project(match[1])
            if project is None:
                raise GatewayError(Kind.NOT_FOUND, f"no project {match[1]!r}")
            # Through the limiter: it holds the live balance.
            return 200, _project_json(project, await self._limiter.add_balance(project.name, nanos))
        if (match := re.fullmatch(r"/projects/([^/]+)/tokens", path)) and method == "GET":
            if await store.find_project(match[1]) is None:
                raise GatewayError(Kind.NOT_FOUND, f"no project {match[1]!r}")
            return 200, {"data": [_token_json(t) for t in store.list_console_tokens(match[1])]}
        if (match := re.fullmatch(r"/projects/([^/]+)/tokens", path)) and method == "POST":
            label = decode(body, NewConsoleToken).name
            new_token = console_tokens.generate()
            try:
                made = store.create_console_token(new_token.token_id, match[1], label, new_token.secret_hash)
            except ValueError as exc:
                raise GatewayError(Kind.NOT_FOUND, str(exc)) from None
            return 201, {**_token_json(made), "token": new_token.token}  # the secret, this once
        if (match := re.fullmatch(r"/tokens/([^/]+)/revoke", path)) and method == "POST":
            if not store.revoke_console_token(match[1]):
                raise GatewayError(Kind.NOT_FOUND, f"no active console token {match[1]!r}")
            return 200, {"id": match[1], "revoked": True}
        if path == "/counters" and method == "GET":
            return 200, self._counters.snapshot()
        if path == "/upstreams" and method == "GET":
            return 200, {"data": [credential_json(view) for view in self._credentials()]}
        if (match := re.fullmatch(r"/upstreams/([^/]+)/([^/]+)/restore", path)) and method == "POST":
            if not self._restore(match[1], match[2]):
                raise GatewayError(Kind.NOT_FOUND, f"no credential {match[2]!r} of vendor {match[1]!r}")
            return 200, {"provider": match[1], "name": match[2], "restored": True}
        if path == "/keys" and method == "GET":
            return 200, {"data": [_key_json(k) for k in store.list_keys()]}
        if path == "/keys" and method == "POST":
            key = decode(body, NewKey)
            new = generate_key()
            record = store.create_key(new.key_id, key.project, key.name or None, new.secret_hash, *key.stored())
            return 201, {**_key_json(record), "key": new.token}  # the secret, this once
        if (match := re.fullmatch(r"/keys/([^/]+)", path)) and method == "PATCH":
            updated = store.update_key(match[1], decode(body, KeyChanges).columns())
            if updated is None:
                raise GatewayError(Kind.NOT_FOUND, f"no key {match[1]!r}")
            return 200, _key_json(updated)
        if (match := re.fullmatch(r"/keys/([^/]+)/revoke", path)) and method == "POST":
            if not store.revoke_key(match[1]):
                raise GatewayError(Kind.NOT_FOUND, f"no active key {match[1]!r}")
            return 200, {"id": match[1], "revoked": True}
        raise GatewayError(Kind.NOT_FOUND, f"no admin route {method} {PREFIX}{path}")


def _save(store: Store, name: str, changes: dict[str, object], create: bool) -> ProjectRecord:
    try:
        return store.save_project(name, changes, create)
    except ValueError as exc:
        raise GatewayError(Kind.INVALID_REQUEST if create else Kind.NOT_FOUND, str(exc)) from exc


async def _read(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise GatewayError(Kind.TOO_LARGE, "admin requests are small JSON documents")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks).strip()
