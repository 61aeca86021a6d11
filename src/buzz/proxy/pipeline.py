"""The request path, top to bottom: authenticate -> route -> forward (relay + meter) -> settle.

Admission control (limits and budgets) slots in between route and forward.
"""

from __future__ import annotations

import logging
import traceback

import aiohttp

from buzz.asgi import Receive, Scope, Send, header_map
from buzz.errors import GatewayError, Kind, send_error
from buzz.proxy.admit import Admission, Admitted, check_access, ratelimit_headers
from buzz.proxy.auth import Authenticator, presented_key
from buzz.proxy.exchange import SCOPE_KEY, Exchange
from buzz.proxy.forward import ResponseAborted, forward
from buzz.proxy.route import Router, add_include_usage, read_head
from buzz.proxy.settle import Settler
from buzz.routes import CHAT, Endpoint, Surface
from buzz.upstreams.rules import usage_rules

log = logging.getLogger("buzz.pipeline")


class ClientGone(Exception):
    """The client hung up before it finished sending its request."""


class Pipeline:
    def __init__(
        self,
        auth: Authenticator,
        router: Router,
        settler: Settler,
        session: aiohttp.ClientSession,
        max_body_bytes: int,
        admission: Admission,
        add_include_usage: bool = False,
    ) -> None:
        self._admission = admission
        self._add_include_usage = add_include_usage
        self._auth = auth
        self._router = router
        self._settler = settler
        self._session = session
        self._max_body_bytes = max_body_bytes

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, params: dict[str, str]
    ) -> None:
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = header_map(raw_headers)
        surface = endpoint.surface
        query: bytes = scope.get("query_string", b"")
        x = scope[SCOPE_KEY] = Exchange(surface.value, headers, endpoint.billed)
        admitted: Admitted | None = None
        try:
            token, key_location = presented_key(headers, query if surface is Surface.GEMINI else b"")
            x.principal = await self._auth.authenticate(token)
            body = await self._read_body(receive, headers)
            x.body_bytes = len(body)
            head = read_head(body, model_required=surface is not Surface.GEMINI)
            model = params.get("model") or head.model or ""
            user = headers.get(b"x-buzz-user")
            x.user_id = user.decode("latin-1")[:256] if user else head.user_id
            route = self._router.route(surface, model, _raw_path(scope), query, key_location)
            # Only a routable model id is kept: anything else is arbitrary client text.
            x.model, x.provider = model, route.provider
            check_access(x.principal, model, x.ts)
            if scopes := x.principal.scopes:
                admitted = await self._admission.reserve(scopes, route.provider, model, body, head.max_output, x.ts)
                x.extra_headers = ratelimit_headers(admitted.remaining)
            if self._add_include_usage and endpoint is CHAT and head.stream and not head.include_usage:
                body = add_include_usage(body)
            rules = usage_rules(endpoint, body, model, route.provider)
            await forward(self._session, x, route, str(scope["method"]), raw_headers, body, rules, receive, send)
        except GatewayError as error:
            x.status = error.kind.status
            x.error_type = error.kind.type
            if not x.response_started:
                # Admitted, then failed (upstream unreachable, timeout): the headroom still goes out.
                error.headers.extend(x.extra_headers)
                x.bytes_out = await send_error(send, error, x.request_id, surface)
        except ClientGone:
            x.status = 499
            x.error_type = "client_disconnected"
        except ResponseAborted:
            raise
        except Exception as exc:
            # A fault of buzz's own. Its message could quote request data, so only its type and
            # where it happened are logged.
            log.error("internal error %s at %s", type(exc).__name__, _where(exc))
            x.status, x.error_type = Kind.INTERNAL.status, Kind.INTERNAL.type
            if not x.response_started:
                internal = GatewayError(Kind.INTERNAL, "internal gateway error")
                x.bytes_out = await send_error(send, internal, x.request_id, surface)
            else:
                raise ResponseAborted("internal error mid-response") from None
        finally:
            if not x.metered:
                x.meter = None
            row = self._settler.settle(x)
            if admitted is not None:
                await self._admission.settle(admitted, row)

    async def _read_body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        limit = self._max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise GatewayError(Kind.TOO_LARGE, f"request body is larger than the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise GatewayError(Kind.TOO_LARGE, f"request body is larger than the {limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _raw_path(scope: Scope) -> str:
    # raw_path keeps the client's exact percent-encoding.
    raw_path = scope.get("raw_path")
    return raw_path.decode("latin-1") if isinstance(raw_path, bytes) else str(scope["path"])
