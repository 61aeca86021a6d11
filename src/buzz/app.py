"""`create_app(config)`: builds every part explicitly and hands back one ASGI callable.

The hot path is a plain ASGI function: no framework, no response classes, because on this
path every microsecond is a request per second lost (docs/architecture.md, "Chosen parts").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

import msgspec

from buzz.access_log import KEY_ID, AccessLog, Seen
from buzz.admin.api import PREFIX as ADMIN_PREFIX
from buzz.admin.api import AdminAPI
from buzz.asgi import Receive, Scope, Send, header_map, send_response
from buzz.billing.ledger import LedgerWriter
from buzz.billing.pricing import PriceBook
from buzz.billing.spool import Spool
from buzz.catalogue import Catalogue
from buzz.changes import rfc3339
from buzz.config import PROVIDERS, Config
from buzz.counters import Counters
from buzz.errors import GatewayError, Kind, send_error
from buzz.forwarded import TrustedProxies, parse_networks
from buzz.limits.base import Limiter
from buzz.limits.memory import MemoryLimiter
from buzz.limits.redis import RedisLimiter
from buzz.pools.base import HoldBoard
from buzz.pools.memory import MemoryBoard
from buzz.pools.pool import Pools
from buzz.pools.probe import model_list_probe
from buzz.proxy.admit import Admission, check_access, model_allowed
from buzz.proxy.auth import Authenticator, presented_key
from buzz.proxy.batches import Batches
from buzz.proxy.exchange import new_request_id
from buzz.proxy.forward import make_session
from buzz.proxy.pipeline import Pipeline
from buzz.proxy.route import Router
from buzz.proxy.settle import Settler
from buzz.public import catalog, script
from buzz.public.home import HOME_PAGE
from buzz.readiness import Readiness
from buzz.retention import Retention
from buzz.routes import (
    CLAUDE_CODE_SCRIPT,
    DOUBLED_VERSION,
    HEALTHZ,
    HOME,
    KEY_INFO,
    MODELS_PAGE,
    POST_ONLY,
    PRICING,
    READYZ,
    Endpoint,
    Surface,
    match,
)
from buzz.store import open_store as open_backend
from buzz.store.base import Store
from buzz.upstreams import estimate, openai_models
from buzz.upstreams.model_lists import ModelLists

if TYPE_CHECKING:
    from buzz.console.web import Console
    from buzz.metrics import GatewayMetrics

log = logging.getLogger("buzz")
# How long a shutdown waits, after the server cancelled what was left, for those requests to settle.
_SETTLE_GRACE = 5.0
_NO_STORE = ((b"cache-control", b"private, no-store"),)


def open_store(config: Config) -> Store:
    """The configured store, its migrations applied."""
    return open_backend(config.database_path, config.database_url)


def make_limiter(config: Config, store: Store, counters: Counters) -> Limiter:
    """Redis when several processes share limits; else in process, balances kept in the store."""
    if config.redis_url:
        return RedisLimiter(config.redis_url, fail_open=config.limits_fail_open, counters=counters)
    limiter = MemoryLimiter(balances=store.balances())
    for kind, scope_id, today, month in store.spend_now():
        limiter.restore_spend(kind, scope_id, today, month)
    return limiter


def make_board(config: Config) -> HoldBoard:
    """Holds shared through Redis when several processes serve; else kept in this one."""
    if not config.redis_url:
        return MemoryBoard()
    from buzz.pools.redis import RedisBoard  # redis-py, loaded only when holds are shared

    return RedisBoard(config.redis_url)


def price_book(config: Config) -> PriceBook:
    return PriceBook(discount=config.discount, overrides=config.price_overrides)


@dataclass(slots=True)
class _Running:
    """What exists only between startup and shutdown (it needs the event loop)."""

    store: Store
    ledger: LedgerWriter
    pipeline: Pipeline
    auth: Authenticator
    close_session: Any
    limiter: Limiter
    pools: Pools
    admin: AdminAPI
    models: ModelLists
    console: Console | None
    retention: asyncio.Task[None] | None
    readiness: Readiness


class Gateway:
    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        metrics_socket: socket.socket | None = None,
    ) -> None:
        self.config = config
        self._metrics_socket = metrics_socket  # the metrics port, bound at start (None: bound here, or not served)
        self._metrics: GatewayMetrics | None = None
        self._clock = clock  # for the model lists' cache and the console's sign-in throttle
        self._wall_clock = wall_clock  # for the console's session expiry
        self.catalogue = Catalogue.default(models=config.routing_models, patterns=config.routing_patterns)
        self.prices = price_book(config)
        self.router = Router(config, self.catalogue)
        self.counters = Counters()
        self.proxies = TrustedProxies(parse_networks(config.trusted_proxies))
        self.access_log = AccessLog(config.access_log, self.counters) if config.access_log != "off" else None
        self._running: _Running | None = None
        # Requests in the pipeline, so a shutdown waits for those it cut to write their rows.
        self._inflight = 0
        self._drained: asyncio.Event | None = None

    async def startup(self) -> None:
        if self.access_log is not None:
            self.access_log.start()
        store = open_store(self.config)
        metrics = None
        if self.config.metrics_port:
            # Imported here, once, when on: metrics are no part of the request path's imports.
            from buzz.metrics import GatewayMetrics

            metrics = self._metrics = GatewayMetrics(
                self.catalogue,
                # The pools are made below; the first sample is taken after they are.
                lambda: pools.views(),
                self.config.host,
                self.config.metrics_port,
                self._metrics_socket,
            )
        ledger = LedgerWriter(
            store.write_ledger,
            Spool(self.config.spool_dir),
            self.config.ledger_flush_interval,
            store.write_every,
            observer=None if metrics is None else metrics.series.ledger_rows,
        )
        ledger.start()
        session = make_session(self.config.connect_timeout, self.config.read_timeout)
        limiter = make_limiter(self.config, store, self.counters)
        pools = Pools(
            self.config,
            make_board(self.config),
            model_list_probe(session, self.config.connect_timeout + 10.0),
            self.counters,
            probe_interval=self.config.probe_interval,
        )
        await pools.start()
        # An operator's top-up lands in SQLite from another process; the in-process limiter
        # must then reread balances, not trust its copy.
        auth = Authenticator(store, limiter.forget_balances if isinstance(limiter, MemoryLimiter) else None)
        settler = Settler(self.prices, ledger)
        admission = Admission(
            limiter,
            self.prices,
            self._context_window,
            self.config.output_reserve,
            observer=None if metrics is None else metrics.series.reserved,
        )
        pipeline = Pipeline(
            auth,
            self.router,
            settler,
            session,
            self.config.max_body_bytes,
            self.config.max_upload_bytes,
            admission,
            Batches(store, self.prices, ledger),
            pools,
            self.counters,
            self.proxies,
            self.config.add_include_usage,
            meter_max_bytes=self.config.meter_max_bytes,
            public_url=self.config.public_url,
        )
        if self.router.routable("openai"):
            # The tokenizer for estimates takes ~0.4 s to load: pay it now, off the event loop,
            # not on the first stream that needs an estimate.
            await asyncio.to_thread(estimate.warm_up)
        admin = AdminAPI(
            self.config.admin_token,
            store,
            limiter,
            self.counters,
            auth.invalidate,
            self._wall_clock,
            self.config.report_raw_rows_limit,
            pools.views,
            pools.restore,
        )
        models = ModelLists(self.config, self.catalogue, session, self._clock)
        console = None
        if self.config.console:
            # Imported here, once: the console is no part of the request path's imports.
            from buzz.console.web import Console

            console = Console(
                store,
                limiter,
                self.prices,
                self.counters,
                auth.invalidate,
                self.config,
                self.proxies,
                self._clock,
                self._wall_clock,
                pools.views,
            )
        retention = None
        if self.config.ledger_retention_days is not None:
            pruning = Retention(store, self.config.ledger_retention_days, self._wall_clock)
            retention = asyncio.create_task(pruning.run(), name="buzz-retention")
        readiness = Readiness(store, limiter, ledger)
        if metrics is not None:
            metrics.start(lambda: self._inflight, ledger, self.counters)
        self._running = _Running(
            store, ledger, pipeline, auth, session.close, limiter, pools, admin, models, console, retention, readiness
        )
        # Everything built so far lives as long as the process: keep it out of every future
        # collection, which then only looks at what requests allocate.
        gc.freeze()

    async def shutdown(self) -> None:
        if self._inflight:
            # The server has cancelled what outlived its grace period; those requests are still
            # settling. Their rows must reach the ledger before it closes.
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), _SETTLE_GRACE)
        running, self._running = self._running, None
        if running is None:
            return
        if cut := self.counters.get("shutdown_cut"):
            log.warning("shutdown cut %d request(s) still open after the grace period; each row says so", cut)
        if running.retention is not None:
            running.retention.cancel()
        await running.models.close()
        await running.pools.close()
        await running.close_session()
        await running.limiter.close()
        running.ledger.close()
        if self._metrics is not None:
            await self._metrics.close()  # after the ledger: its last rows are counted
        running.store.close()
        log.info("ledger flushed: %d rows written", running.ledger.written)
        if self.access_log is not None:
            self.access_log.close()

    def _context_window(self, model: str) -> int | None:
        entry = self.catalogue.get(model)
        return None if entry is None else entry.context_window

    @property
    def running(self) -> _Running:
        if self._running is None:
            raise RuntimeError("gateway is not started")
        return self._running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            access_log = self.access_log
            if access_log is None:
                await self._http(scope, receive, send)
                return
            seen = Seen(send, perf_counter())
            try:
                await self._http(scope, receive, seen.send, send)
            finally:
                access_log.end(scope, seen)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    raise
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send, unobserved: Send | None = None) -> None:
        """`unobserved`: the send without the access log's wrapper, for the pipeline, whose
        exchange records what the log needs (a wrapper costs every relayed chunk a call)."""
        if scope["path"].startswith(ADMIN_PREFIX):
            await self.running.admin(scope, receive, send)
            return
        endpoint, params = match(scope["method"], scope["path"], scope["headers"], scope.get("query_string", b""))
        if endpoint is None:
            console = self.running.console
            # Looked for only once no route matched, so it costs a proxied request nothing.
            if console is not None and _is_console(scope["path"]):
                await console(scope, receive, send)
                return
            error = GatewayError(Kind.NOT_FOUND, f"no route {scope['method']} {scope['path']} on this gateway")
            await send_error(send, error, new_request_id(), _surface_of(scope))
        elif endpoint.proxied:
            self._inflight += 1
            try:
                await self.running.pipeline.handle(scope, receive, unobserved or send, endpoint, params)
            finally:
                self._inflight -= 1
                if not self._inflight and self._drained is not None:
                    self._drained.set()
        elif endpoint is HEALTHZ:
            await send_response(send, 200, b'{"status":"ok"}', b"application/json")
        elif endpoint is READYZ:
            await self._ready(send)
        elif endpoint is MODELS_PAGE or endpoint is PRICING:
            await self._public(scope, send, endpoint)
        elif endpoint is CLAUDE_CODE_SCRIPT:
            await self._script(scope, send)
        elif endpoint is KEY_INFO:
            await self._key_info(scope, send)
        elif endpoint is HOME:
            await _public_response(send, HOME_PAGE, b"text/html; charset=utf-8")
        elif endpoint is POST_ONLY or endpoint is DOUBLED_VERSION:
            await send_error(send, _mistake(endpoint, scope), new_request_id(), endpoint.surface)
        else:
            await self._models(scope, send, params)

    async def _ready(self, send: Send) -> None:
        ready, checks = await self.running.readiness.check()
        document = msgspec.json.encode({"status": "ready" if ready else "not ready", "checks": checks})
        await send_response(send, 200 if ready else 503, document, b"application/json", _NO_STORE)

    async def _key_info(self, scope: Scope, send: Send) -> None:
        """What the presented key is, checked by buzz alone: a client (the install script among
        them) can tell a good key from a bad one without any vendor being reachable."""
        token, _ = presented_key(header_map(scope["headers"]))
        try:
            principal = await self.running.pipeline.authenticate(scope, token)
        except GatewayError as error:
            await send_error(send, error, new_request_id(), Surface.OPENAI)
            return
        scope[KEY_ID] = principal.key_id
        key = principal.key
        document = {
            "id": principal.key_id,
            "project": principal.project,
            "expires_at": None if key is None or key.expires_at is None else rfc3339(key.expires_at),
            "models": None if key is None or key.allowed_models is None else list(key.allowed_models),
        }
        await send_response(send, 200, msgspec.json.encode(document), b"application/json", _NO_STORE)

    async def _script(self, scope: Scope, send: Send) -> None:
        try:
            body = script.claude_code_script(script.public_url(self.config.public_url, scope, self.proxies))
        except GatewayError as error:
            await send_error(send, error, new_request_id(), Surface.OPENAI)
            return
        if self.config.public_url:
            await _public_response(send, body, b"text/x-shellscript; charset=utf-8")
        else:
            # The address in it came from this request's headers: a shared cache must never hand
            # it to anyone else.
            await send_response(send, 200, body, b"text/x-shellscript; charset=utf-8", _NO_STORE)

    async def _public(self, scope: Scope, send: Send, endpoint: Endpoint) -> None:
        """The public model list and prices: no key needed, the same figures buzz bills with."""
        routable = [entry for entry in self.catalogue.list() if self.router.routable(entry.provider)]
        routable.sort(key=lambda entry: PROVIDERS.index(entry.provider))  # by vendor, newest first within
        pricing = catalog.pricing_document(routable, self.prices, self.config.discount)
        accept = header_map(scope["headers"]).get(b"accept", b"")
        if endpoint is PRICING:
            await _public_response(send, msgspec.json.encode(pricing), b"application/json")
        elif b"application/json" in accept and b"text/html" not in accept:
            await _public_response(send, msgspec.json.encode(catalog.models_document(routable)), b"application/json")
        else:
            await _public_response(send, catalog.models_page(routable, pricing), b"text/html; charset=utf-8")

    async def _models(self, scope: Scope, send: Send, params: dict[str, str]) -> None:
        """The OpenAI surface's model list: every configured vendor's own, as far as the key may use it.

        Anthropic and Gemini clients never get here: their `GET /v1/models` goes to their vendor.
        """
        try:
            token, _ = presented_key(header_map(scope["headers"]))
            principal = await self.running.pipeline.authenticate(scope, token)
            scope[KEY_ID] = principal.key_id
            check_access(principal, None, time.time())
            union = await self.running.models.union()
            usable = [model for model in union.models if model_allowed(principal.key, model.id)]
            if "model_id" in params:
                document = openai_models.one(usable, params["model_id"])
            else:
                document = openai_models.listing(usable)
        except GatewayError as error:
            await send_error(send, error, new_request_id(), Surface.OPENAI)
            return
        fallback = [(openai_models.FALLBACK_HEADER, ",".join(union.from_catalogue).encode())]
        await send_response(
            send, 200, msgspec.json.encode(document), b"application/json", fallback if union.from_catalogue else ()
        )


async def _public_response(send: Send, body: bytes, content_type: bytes) -> None:
    await send_response(
        send, 200, body, content_type, [(b"cache-control", b"public, max-age=300"), (b"vary", b"accept")]
    )


def _mistake(endpoint: Endpoint, scope: Scope) -> GatewayError:
    if endpoint is POST_ONLY:
        return GatewayError(
            Kind.METHOD_NOT_ALLOWED, f"{scope['path']} takes POST, not {scope['method']}", [(b"allow", b"POST")]
        )
    return GatewayError(
        Kind.NOT_FOUND,
        f"no route {scope['method']} {scope['path']} on this gateway: the path names /v1 twice; "
        "drop /v1 from the client's base URL",
    )


def _is_console(path: str) -> bool:
    return path == "/console" or path.startswith("/console/")


def _surface_of(scope: Scope) -> Surface:
    """For an unknown route: answer in the envelope the client most likely reads."""
    headers = header_map(scope["headers"])
    if b"anthropic-version" in headers or b"x-api-key" in headers or str(scope["path"]).startswith("/v1/messages"):
        return Surface.ANTHROPIC
    if str(scope["path"]).startswith("/v1beta/") or b"x-goog-api-key" in headers:
        return Surface.GEMINI
    return Surface.OPENAI


def create_app(config: Config, metrics_socket: socket.socket | None = None) -> Gateway:
    return Gateway(config, metrics_socket=metrics_socket)
