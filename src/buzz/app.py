"""`create_app(config)`: builds every part explicitly and hands back one ASGI callable.

The hot path is a plain ASGI function: no framework, no response classes, because on this
path every microsecond is a request per second lost (DESIGN.md section 10).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import msgspec

from buzz.access_log import KEY_ID, AccessLog, Seen
from buzz.admin.api import PREFIX as ADMIN_PREFIX
from buzz.admin.api import AdminAPI
from buzz.asgi import Receive, Scope, Send, header_map, send_response
from buzz.billing.ledger import LedgerWriter
from buzz.billing.pricing import PriceBook
from buzz.catalogue import Catalogue
from buzz.config import PROVIDERS, Config
from buzz.counters import Counters
from buzz.errors import GatewayError, Kind, send_error
from buzz.limits.base import Limiter
from buzz.limits.memory import MemoryLimiter
from buzz.limits.redis import RedisLimiter
from buzz.proxy.admit import Admission
from buzz.proxy.auth import Authenticator, presented_key
from buzz.proxy.exchange import new_request_id
from buzz.proxy.forward import make_session
from buzz.proxy.pipeline import Pipeline
from buzz.proxy.route import Router
from buzz.proxy.settle import Settler
from buzz.public import catalog, script
from buzz.routes import CLAUDE_CODE_SCRIPT, HEALTHZ, MODELS_PAGE, PRICING, Endpoint, Surface, match
from buzz.store.sqlite import SQLiteStore
from buzz.upstreams import estimate, models_api, openai_models

log = logging.getLogger("buzz")


def make_limiter(config: Config, store: SQLiteStore) -> Limiter:
    """Redis when several processes share limits; else in process, balances kept in SQLite."""
    if config.redis_url:
        return RedisLimiter(config.redis_url, fail_open=config.limits_fail_open)
    limiter = MemoryLimiter(balances=store.balances())
    for kind, scope_id, today, month in store.spend_now():
        limiter.restore_spend(kind, scope_id, today, month)
    return limiter


def price_book(config: Config) -> PriceBook:
    return PriceBook(discount=config.discount, overrides=config.price_overrides)


@dataclass(slots=True)
class _Running:
    """What exists only between startup and shutdown (it needs the event loop)."""

    store: SQLiteStore
    ledger: LedgerWriter
    pipeline: Pipeline
    auth: Authenticator
    close_session: Any
    limiter: Limiter
    admin: AdminAPI


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalogue = Catalogue.default(models=config.routing_models, patterns=config.routing_patterns)
        self.prices = price_book(config)
        self.router = Router(config, self.catalogue)
        self.counters = Counters()
        self.access_log = AccessLog(config.access_log, self.counters) if config.access_log != "off" else None
        self._running: _Running | None = None

    async def startup(self) -> None:
        if self.access_log is not None:
            self.access_log.start()
        store = SQLiteStore(self.config.database_path)
        ledger = LedgerWriter(store.write_ledger, self.config.ledger_flush_interval)
        ledger.start()
        session = make_session(self.config.connect_timeout, self.config.read_timeout)
        limiter = make_limiter(self.config, store)
        # An operator's top-up lands in SQLite from another process; the in-process limiter
        # must then reread balances, not trust its copy.
        auth = Authenticator(store, limiter.forget_balances if isinstance(limiter, MemoryLimiter) else None)
        settler = Settler(self.prices, ledger)
        admission = Admission(limiter, self.prices)
        pipeline = Pipeline(
            auth, self.router, settler, session, self.config.max_body_bytes, admission, self.config.add_include_usage
        )
        if self.router.routable("openai"):
            # The tokenizer for estimates takes ~0.4 s to load: pay it now, off the event loop,
            # not on the first stream that needs an estimate.
            await asyncio.to_thread(estimate.warm_up)
        admin = AdminAPI(self.config.admin_token, store, limiter, self.counters, changed=auth.invalidate)
        self._running = _Running(store, ledger, pipeline, auth, session.close, limiter, admin)
        # Everything built so far lives as long as the process: keep it out of every future
        # collection, which then only looks at what requests allocate.
        gc.freeze()

    async def shutdown(self) -> None:
        running, self._running = self._running, None
        if running is None:
            return
        await running.close_session()
        await running.limiter.close()
        running.ledger.close()
        running.store.close()
        log.info("ledger flushed: %d rows written", running.ledger.written)
        if self.access_log is not None:
            self.access_log.close()

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
        endpoint, params = match(scope["method"], scope["path"])
        if endpoint is None:
            error = GatewayError(Kind.NOT_FOUND, f"no route {scope['method']} {scope['path']} on this gateway")
            await send_error(send, error, new_request_id(), _surface_of(scope))
        elif endpoint.proxied:
            await self.running.pipeline.handle(scope, receive, unobserved or send, endpoint, params)
        elif endpoint is HEALTHZ:
            await send_response(send, 200, b'{"status":"ok"}', b"application/json")
        elif endpoint is MODELS_PAGE or endpoint is PRICING:
            await self._public(scope, send, endpoint)
        elif endpoint is CLAUDE_CODE_SCRIPT:
            try:
                body = script.claude_code_script(script.public_url(self.config.public_url, scope))
            except GatewayError as error:
                await send_error(send, error, new_request_id(), Surface.OPENAI)
                return
            await _public_response(send, body, b"text/x-shellscript; charset=utf-8")
        else:
            await self._models(scope, send, params)

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
        """Anthropic's shape for Anthropic clients (they send anthropic-version), OpenAI's otherwise."""
        headers = header_map(scope["headers"])
        anthropic_shape = b"anthropic-version" in headers
        surface = Surface.ANTHROPIC if anthropic_shape else Surface.OPENAI
        try:
            token, _ = presented_key(headers)
            scope[KEY_ID] = (await self.running.auth.authenticate(token)).key_id
            routable = [entry for entry in self.catalogue.list() if self.router.routable(entry.provider)]
            shape = models_api if anthropic_shape else openai_models
            if "model_id" in params:
                document: object = shape.one(routable, self.catalogue, params["model_id"])
            else:
                document = shape.listing(routable, self.catalogue, scope.get("query_string", b""))
        except GatewayError as error:
            await send_error(send, error, new_request_id(), surface)
            return
        await send_response(send, 200, msgspec.json.encode(document), b"application/json")


async def _public_response(send: Send, body: bytes, content_type: bytes) -> None:
    await send_response(
        send, 200, body, content_type, [(b"cache-control", b"public, max-age=300"), (b"vary", b"accept")]
    )


def _surface_of(scope: Scope) -> Surface:
    """For an unknown route: answer in the envelope the client most likely reads."""
    headers = header_map(scope["headers"])
    if b"anthropic-version" in headers or b"x-api-key" in headers or str(scope["path"]).startswith("/v1/messages"):
        return Surface.ANTHROPIC
    if str(scope["path"]).startswith("/v1beta/") or b"x-goog-api-key" in headers:
        return Surface.GEMINI
    return Surface.OPENAI


def create_app(config: Config) -> Gateway:
    return Gateway(config)
