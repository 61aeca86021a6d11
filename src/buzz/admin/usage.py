"""`GET /admin/api/usage` (the aggregates the console's charts draw) and
`GET /admin/api/usage/export` (the ledger's rows, streamed).

Both take the operator token, which sees every project, or a project console token, which sees
its own project only, whatever the query string says: `Authorization: Bearer …` either way. An
API key is neither, so a leaked API key reads no usage.

The store's report calls are synchronous and can take a while on a big ledger, so they run in a
thread; the export hands each batch to a thread and waits for the client to take the bytes
before it reads the next (the server's write buffer applies back-pressure), so memory stays flat.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl

import msgspec

from buzz import console_tokens, export, reports
from buzz.asgi import Receive, Scope, Send, header_map
from buzz.errors import GatewayError, Kind
from buzz.store.base import Store

log = logging.getLogger("buzz.admin")
ROUTES = ("/usage", "/usage/export")
_MAX_QUERY = 4096


def query_params(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    assert isinstance(raw, bytes)
    if len(raw) > _MAX_QUERY:
        raise GatewayError(Kind.INVALID_REQUEST, "the query string is too long")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise GatewayError(Kind.INVALID_REQUEST, "the query string is not UTF-8") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:  # two values of one parameter: which one was meant is a guess
            raise GatewayError(Kind.INVALID_REQUEST, f"{name}: given twice")
        params[name] = value
    return params


class UsageAPI:
    def __init__(
        self, admin_token: str | None, store: Store, wall_clock: Callable[[], float], raw_rows_limit: int
    ) -> None:
        self._admin_token = admin_token
        self._store = store
        self._wall_clock = wall_clock
        self._raw_rows_limit = raw_rows_limit

    def member_project(self, scope: Scope) -> str | None:
        """None for the operator, the project's name for a console token; else 401."""
        scheme, _, given = header_map(scope["headers"]).get(b"authorization", b"").partition(b" ")
        token = given.strip()
        if scheme.lower() == b"bearer" and token:
            if self._admin_token and hmac.compare_digest(token, self._admin_token.encode()):
                return None
            record = console_tokens.verify(self._store, token.decode("ascii", "replace"))
            if record is not None:
                return record.project
        raise GatewayError(
            Kind.AUTHENTICATION,
            "usage API: send the operator token or a project console token as Authorization: Bearer",
        )

    async def __call__(self, scope: Scope, path: str, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            raise GatewayError(Kind.NOT_FOUND, f"no admin route {scope['method']} /admin/api{path}")
        project = self.member_project(scope)
        params = query_params(scope)
        now = self._wall_clock()
        try:
            if path == "/usage":
                query = reports.parse_query(params, now, project)
                report = await asyncio.to_thread(reports.usage_report, self._store, query, self._raw_rows_limit)
                body = msgspec.json.encode(reports.report_json(report))
                await send({"type": "http.response.start", "status": 200, "headers": _headers(b"application/json")})
                await send({"type": "http.response.body", "body": body})
                return
            export_query = export.parse_export(params, now, project)
        except reports.InvalidQuery as exc:
            raise GatewayError(Kind.INVALID_REQUEST, str(exc)) from None
        await export.stream(self._store, export_query, receive, send)


def _headers(media_type: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", media_type), (b"cache-control", b"no-store")]
