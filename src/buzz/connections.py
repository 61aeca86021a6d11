"""Client connections: a deadline for each request head, and a cap the descriptors can honour.

uvicorn arms its keep-alive timer only after a response, sets no deadline for a request head,
and its `limit_concurrency` answers only once a head is complete. A client that opens
connections and sends nothing, or half a head, therefore holds one file descriptor each for as
long as it likes, and enough of them leave none for `/healthz`, the upstreams or the database.

`GuardedProtocol` is uvicorn's httptools protocol with one `ConnectionGuard` per server, which
keeps three things:

- a deadline for each request head: `header_timeout` from the connection opening, or from the
  first byte of the next request on a kept-alive connection (before that first byte, uvicorn's
  keep-alive timeout applies). One periodic sweep checks the deadlines; no timer is made per
  request.
- a cap on open client connections, set below the descriptor limit (`connection_cap`).
- at the cap, the connection idle the longest (waiting for a head, or kept alive between
  requests) is closed to make room. When every connection is busy in a request, the newcomer is
  answered 503 `gateway_unavailable_error` once its head is read, and closed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from buzz.asgi import Receive, Scope, Send
from buzz.counters import Counters
from buzz.errors import GatewayError, Kind, send_error
from buzz.proxy.exchange import new_request_id
from buzz.routes import Surface, match

log = logging.getLogger("buzz.connections")

App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Descriptors kept out of the client cap whatever the load: the database with its WAL and
# shared-memory files, Redis, the listening socket, the event loop's own, standard streams.
_RESERVE = 256
# With no hard limit, the kernel still caps descriptors per process (fs.nr_open, 2^20 by default).
_UNLIMITED = 1 << 20
_RETRY_AFTER = b"1"


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the limit the process now has."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY:
        return _UNLIMITED
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # the kernel refused (above fs.nr_open): keep the soft limit
    return soft


def connection_cap(descriptors: int, configured: int = 0) -> int:
    """How many client connections fit: each busy one may hold an upstream connection too, so
    clients get half of what the reserve leaves. A configured cap may only be lower."""
    fits = max(1, (descriptors - _RESERVE) // 2)
    return min(configured, fits) if configured > 0 else fits


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """At the cap, with no idle connection to close: a retryable 503, then the connection closes."""
    endpoint, _ = match(scope["method"], scope["path"])
    error = GatewayError(
        Kind.UNAVAILABLE,
        "buzz is at its connection limit; retry shortly",
        [(b"retry-after", _RETRY_AFTER), (b"connection", b"close")],
    )
    await send_error(send, error, new_request_id(), endpoint.surface if endpoint else Surface.OPENAI)


class ConnectionGuard:
    """Every open client connection of one server, which of them are idle, and their deadlines."""

    def __init__(self, cap: int, header_timeout: float, counters: Counters, refusal: App = refuse) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        self.refusal = refusal
        self._counters = counters
        self._open: set[GuardedProtocol] = set()
        # Idle connections, the longest idle first: the first to close when room is needed.
        self._idle: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self._cap_reached = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_every = min(1.0, header_timeout / 4)

    @property
    def open(self) -> int:
        return len(self._open)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sweep_handle = loop.call_later(self._sweep_every, self._sweep)

    def stop(self) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None

    def opened(self, conn: GuardedProtocol) -> None:
        self._open.add(conn)
        self._idle[conn] = None
        if len(self._open) > self.cap:
            if not self._cap_reached:
                self._cap_reached = True
                log.warning(
                    "connection cap reached (%d client connections): from now on the longest idle connection "
                    "is closed to make room, and a new client is answered 503 when none is idle",
                    self.cap,
                )
            self._make_room(conn)

    def busy(self, conn: GuardedProtocol) -> bool:
        """`conn` has a complete request head. False: there is no room, answer it 503."""
        if self._idle.pop(conn, False) is False:
            return True  # a pipelined request on a connection already busy
        if len(self._open) <= self.cap or self._make_room(conn):
            return True
        self._counters.add("connections_refused")
        return False

    def idle(self, conn: GuardedProtocol) -> None:
        self._idle[conn] = None

    def closed(self, conn: GuardedProtocol) -> None:
        self._open.discard(conn)
        self._idle.pop(conn, None)

    def _make_room(self, newcomer: GuardedProtocol) -> bool:
        oldest = next(iter(self._idle), None)
        if oldest is None or oldest is newcomer:
            return False
        self._close(oldest)
        self._counters.add("connections_closed_idle")
        return True

    def _close(self, conn: GuardedProtocol) -> None:
        # Out of the count at once: its descriptor is released as soon as the loop closes it.
        self.closed(conn)
        if not conn.transport.is_closing():
            conn.transport.close()

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        # Only idle connections: one busy in a request is never cut for a late pipelined head.
        late = [conn for conn in self._idle if 0.0 < conn.head_deadline <= now]
        for conn in late:
            self._close(conn)
        if late:
            self._counters.add("connections_header_timeout", len(late))
        self._sweep_handle = self._loop.call_later(self._sweep_every, self._sweep)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, reporting to `guard` (set by `guarded_protocol`).

    The methods called for every request name their base class instead of calling `super()`,
    which makes an object each time.
    """

    guard: ConnectionGuard

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.head_deadline = 0.0  # loop time by which the awaited head must be complete; 0: none awaited

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_deadline = self.loop.time() + self.guard.header_timeout
        self.guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        if not self.head_deadline:  # a kept-alive connection's next request: its first byte is here
            self.head_deadline = self.loop.time() + self.guard.header_timeout

    def on_headers_complete(self) -> None:
        self.head_deadline = 0.0
        if self.guard.busy(self):
            HttpToolsProtocol.on_headers_complete(self)
            return
        # uvicorn reads `self.app` when it starts the request's task: this one request gets the 503.
        app, self.app = self.app, self.guard.refusal
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def handle_websocket_upgrade(self) -> None:
        # The connection passes to uvicorn's websocket protocol, which the guard does not follow
        # (buzz serves no websocket route: the gateway ignores it and uvicorn closes it).
        self.guard.closed(self)
        super().handle_websocket_upgrade()

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        if not self.transport.is_closing() and self.cycle.response_complete:
            self.guard.idle(self)


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to this server's guard."""

    class Protocol(GuardedProtocol):
        pass

    Protocol.guard = guard
    return Protocol
