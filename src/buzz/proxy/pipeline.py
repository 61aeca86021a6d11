"""The request path, top to bottom: authenticate -> route -> forward (relay + meter) -> settle.

Admission control (limits and budgets) slots in between route and forward.
"""

from __future__ import annotations

import asyncio
import logging
import math

import aiohttp

from buzz.asgi import Receive, Scope, Send, header_map
from buzz.billing.ledger import LedgerRow
from buzz.config import METER_MAX_BYTES
from buzz.counters import Counters
from buzz.errors import GatewayError, Kind, send_error, where
from buzz.forwarded import TrustedProxies, public_url
from buzz.identifiers import identifier_or_none
from buzz.pools.pool import Pools
from buzz.proxy import attribution
from buzz.proxy.admit import Admission, Admitted, check_access, ratelimit_headers
from buzz.proxy.auth import Authenticator, FailureThrottle, Principal, presented_key
from buzz.proxy.batches import Batches
from buzz.proxy.exchange import SCOPE_KEY, Exchange
from buzz.proxy.forward import PLAIN, Passage, ResponseAborted, Unreachable, forward
from buzz.proxy.route import NO_HEAD, Destination, Router, add_include_usage, read_head
from buzz.proxy.settle import Settler
from buzz.proxy.upload import ClientGone, ModelScan, Upload, too_large
from buzz.routes import CHAT, Endpoint, Surface, unpriced
from buzz.upstreams.base import UsageRules
from buzz.upstreams.rules import usage_rules

log = logging.getLogger("buzz.pipeline")


class Pipeline:
    def __init__(
        self,
        auth: Authenticator,
        router: Router,
        settler: Settler,
        session: aiohttp.ClientSession,
        max_body_bytes: int,
        max_upload_bytes: int,
        admission: Admission,
        batches: Batches,
        pools: Pools,
        counters: Counters,
        proxies: TrustedProxies,
        add_include_usage: bool = False,
        throttle: FailureThrottle | None = None,
        meter_max_bytes: int = METER_MAX_BYTES,
        public_url: str | None = None,
    ) -> None:
        self._public_url = public_url  # where batch objects' `results_url` points (else the Host)
        self._admission = admission
        self._counters = counters
        self._proxies = proxies
        self._throttle = throttle or FailureThrottle()
        self._meter_max_bytes = meter_max_bytes
        self._add_include_usage = add_include_usage
        self._auth = auth
        self._router = router
        self._settler = settler
        self._session = session
        self._max_body_bytes = max_body_bytes
        self._max_upload_bytes = max_upload_bytes
        self._batches = batches
        self._pools = pools

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
            x.principal = await self.authenticate(scope, token)
            passage, room = PLAIN, 0
            if endpoint.streamed:  # files, batches...: the body goes up as it comes, never whole
                body, (passage, room) = b"", await self._passage(scope, receive, headers, x)
                x.unpriced = unpriced(surface, scope["path"])
            else:
                body = await self._read_body(receive, headers)
                x.body_bytes = len(body)
            if endpoint.by_model:
                head = read_head(body, model_required=surface is not Surface.GEMINI)
                model = params.get("model") or head.model or ""
            else:  # a model list, or one model's details: the surface's own vendor answers
                head, model = NO_HEAD, params.get("model_id", "")
            # The most output the request allows: no estimate of what it produced goes beyond it.
            ceiling = None if head.max_output is None else head.max_output * head.choices
            user, tags = headers.get(b"x-buzz-user"), headers.get(b"x-buzz-tags")
            x.user_id = attribution.user(user) if user else head.user_id
            if tags:
                x.tags = attribution.tags(tags)
            destination = self._router.route(surface, model, _raw_path(scope), query, key_location, endpoint.by_model)
            # Only a routable model id is kept: anything else is arbitrary client text.
            x.model = model if endpoint.by_model else identifier_or_none(model or None)
            x.provider = destination.provider
            check_access(x.principal, model or None, x.ts)
            if scopes := x.principal.scopes:
                admitted = await self._admission.reserve(
                    scopes, destination.provider, model, body, head, x.ts, endpoint.billed, room
                )
                x.extra_headers = ratelimit_headers(admitted.remaining)
            if self._add_include_usage and endpoint is CHAT and head.stream and not head.include_usage:
                body = add_include_usage(body)
            rules = usage_rules(endpoint, body, model, destination.provider, ceiling)
            # Files, batches and model lists name objects of one upstream account: its first credential.
            bound, method = not endpoint.by_model, str(scope["method"])
            await self._forward(x, destination, bound, method, raw_headers, body, rules, receive, send, passage)
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
        except asyncio.CancelledError:
            # A client that leaves is seen by `forward`; what else cancels a request is a graceful
            # shutdown that ran out of time. The row says so, and the server logs it once.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            x.error_type = "shutdown_cut"
            self._counters.add("shutdown_cut")
            if x.response_started:
                raise ResponseAborted("cut by shutdown") from None
            x.status = Kind.UNAVAILABLE.status
            await send_error(
                send, GatewayError(Kind.UNAVAILABLE, "the gateway is shutting down"), x.request_id, surface
            )
        except Exception as exc:
            # A fault of buzz's own. Its message could quote request data, so only its type and
            # where it happened are logged.
            log.error("internal error %s at %s", type(exc).__name__, where(exc))
            x.status, x.error_type = Kind.INTERNAL.status, Kind.INTERNAL.type
            if not x.response_started:
                internal = GatewayError(Kind.INTERNAL, "internal gateway error")
                x.bytes_out = await send_error(send, internal, x.request_id, surface)
            else:
                raise ResponseAborted("internal error mid-response") from None
        finally:
            # A request without a valid key leaves no row: anyone could fill the disk with them.
            if x.principal is not None:
                await self._settle(x, admitted)

    async def _forward(
        self,
        x: Exchange,
        destination: Destination,
        bound: bool,
        method: str,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
        rules: UsageRules,
        receive: Receive,
        send: Send,
        passage: Passage,
    ) -> None:
        """One upstream attempt, with a credential of the vendor's pool. Another credential is
        tried only when no connection could be made: then nothing of the request left. Never
        after that, whatever happens: a request sent twice could be answered (and billed) twice."""
        tried: list[str] = []
        while True:
            lease = self._pools.acquire(destination.provider, tried, bound)
            x.credential = lease.name
            try:
                route = destination.to(lease.config)
                await forward(
                    self._session, x, route, method, raw_headers, body, rules, receive, send,
                    self._meter_max_bytes, passage, lease.answered,
                )  # fmt: skip
                return
            except Unreachable:
                lease.unreachable()
                tried.append(lease.name)
                if bound or not self._pools.untried(destination.provider, tried):
                    raise
            finally:
                lease.release(x.meter.error_type if x.meter is not None else None)

    async def authenticate(self, scope: Scope, token: str | None) -> Principal:
        """The key's principal; refusals are counted and throttled per client address."""
        throttle = self._throttle
        if throttle.active and not self._auth.vouches(token):
            wait = throttle.wait(self._proxies.client(scope))
            if wait is not None:
                self._counters.add("auth_throttled")
                seconds = max(1, math.ceil(wait))
                raise GatewayError(
                    Kind.RATE_LIMIT,
                    f"too many requests with invalid keys from this address; try again in {seconds} s",
                    [(b"retry-after", b"%d" % seconds)],
                )
        try:
            return await self._auth.authenticate(token)
        except GatewayError as error:
            if error.kind is Kind.AUTHENTICATION:
                self._counters.add("auth_refused")
                throttle.refused(self._proxies.client(scope))
            raise

    async def _settle(self, x: Exchange, admitted: Admitted | None) -> None:
        """The ledger row and the reservation are each settled whatever became of the other, and
        neither may raise into the server: a failure is counted and logged (type and place only)."""
        row: LedgerRow | None = None
        charge = 0  # a batch's results billed by this fetch, on rows of their own
        if x.results is not None and 200 <= x.status < 300:
            try:
                charge = await self._batches.bill(x, *x.results)
            except Exception as exc:
                self._counters.add("batch_bill_failed")
                log.error("batch billing failed: %s at %s", type(exc).__name__, where(exc))
            if x.results[2].unread:
                # Relayed whole, but not read: its results are billed when fetched in a form buzz reads.
                self._counters.add("batch_results_unread")
                log.warning("batch results of %s relayed unread (encoding or size): not billed", x.results[0])
        try:
            row = self._settler.settle(x)
        except Exception as exc:
            self._counters.add("ledger_settle_failed")
            log.error("ledger settle failed: %s at %s", type(exc).__name__, where(exc))
        if admitted is not None:
            try:
                await self._admission.settle(admitted, row, charge)
            except Exception as exc:
                self._counters.add("limiter_settle_failed")
                log.error("limiter settle failed: %s at %s", type(exc).__name__, where(exc))

    async def _passage(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], x: Exchange
    ) -> tuple[Passage, int]:
        """How another route's bytes go, and the spend room its key must have (see `Batches`)."""
        path = scope["path"]
        if not _plain(path, _raw_path(scope)):
            # `..`, `//` or a trailing `/` could name another route at the vendor than the one
            # buzz checked (ownership, billing): only plain paths pass.
            raise GatewayError(Kind.INVALID_REQUEST, "path: empty, '.' or '..' segments are not forwarded")
        # A request without a body (a GET, a DELETE) goes up without one, not as an empty chunked one.
        sends_body = b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0"
        upload = self._upload(receive, headers, x) if sends_body else None
        principal = x.principal
        if upload is not None and principal is not None and principal.key and principal.key.allowed_models is not None:
            upload.scan = ModelScan(lambda model: check_access(principal, model, x.ts))
        return await self._batches.passage(
            x, scope["method"], path, upload, lambda: public_url(self._public_url, scope, self._proxies)
        )

    def _upload(self, receive: Receive, headers: dict[bytes, bytes], x: Exchange) -> Upload:
        limit = self._max_upload_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        return Upload(receive, limit, x)

    async def _read_body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        limit = self._max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _plain(path: str, raw: str) -> bool:
    """No empty, `.` or `..` segment, written plainly or percent-encoded."""
    lowered = raw.lower()
    return "%2e" not in lowered and "%2f" not in lowered and all(s not in ("", ".", "..") for s in path.split("/")[1:])


def _raw_path(scope: Scope) -> str:
    # raw_path keeps the client's exact percent-encoding.
    raw_path = scope.get("raw_path")
    return raw_path.decode("latin-1") if isinstance(raw_path, bytes) else str(scope["path"])
