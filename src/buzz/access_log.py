"""The access log: one line per request, written off the event loop.

A line holds the arrival time (UTC), the request id, the key id, the method, the route's
template (never the raw path, which can carry ids), the model, the status, the latency and the
time to the first byte in milliseconds, and the request and response body sizes. Never a body,
a query string, a header value or a key.

On the event loop a request costs a `Seen` and one append to a bounded deque (and, for buzz's
own answers, a wrapped `send`); a thread reads the figures, formats the lines and writes them in
batches. When the output cannot keep
up (a stderr pipe nobody reads), the deque fills and further lines are dropped and counted
(`access_log_dropped`), so the log can neither grow without bound nor make a request wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from buzz.asgi import Message, Receive, Scope, Send
from buzz.counters import Counters
from buzz.proxy.exchange import SCOPE_KEY as EXCHANGE
from buzz.routes import match

App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where the gateway leaves the key id of a request answered outside the pipeline (/v1/models).
KEY_ID = "buzz.key_id"

_CAPACITY = 8192  # requests waiting for the writer
_INTERVAL = 0.2  # seconds between the writer's batches
# A write to a pipe of at most this many bytes is not interleaved with other writers' output
# (the logging module's lines on the same stderr); a batch goes out in pieces of whole lines.
_PIPE_BUF = 4096
_ADMIN = "/admin/api"
_CONSOLE = "/console"
_CONSOLE_WORDS = frozenset(
    {"keys", "new", "revoke", "projects", "balance", "sign-in", "sign-out", "tokens", "usage", "features", "cache"}
)
_ADMIN_WORDS = frozenset({"projects", "keys", "counters", "balance", "revoke"})
# Client text (a model id) that can go into a text line as it is; anything else is JSON-quoted,
# so a line can never be split or forged.
_PLAIN = re.compile(r"[A-Za-z0-9._:/@+\-]+")
_TEXT = "%s %s %s %d request_id=%s key_id=%s model=%s latency_ms=%.1f ttfb_ms=%.1f bytes_in=%d bytes_out=%d\n"
_TEXT_NO_TTFB = _TEXT.replace("ttfb_ms=%.1f", "ttfb_ms=%s")
_MILLIS = tuple(f".{milli:03d}+00:00" for milli in range(1000))


class _Line(msgspec.Struct):
    """One line of the JSON form, fields in this order."""

    time: str
    request_id: str | None
    key_id: str | None
    method: str
    route: str | None
    model: str | None
    status: int
    latency_ms: float
    ttfb_ms: float | None
    bytes_in: int
    bytes_out: int


class Seen(msgspec.Struct):
    """One request as the log sees it: when it came, and what its response has shown so far.

    A msgspec Struct because one is made for every request, and a Struct is made in C.
    `send` wraps the ASGI send of buzz's own answers (the pipeline's exchange records its own).
    It is a plain function that hands back the inner send's awaitable, so it adds no coroutine.
    """

    inner: Send
    started: float
    bytes_out: int = 0
    status: int = 0
    head_at: float = 0.0
    headers: Any = None

    def send(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.body":
            self.bytes_out += len(message.get("body", b""))
        elif message["type"] == "http.response.start":
            self.status = message["status"]
            self.head_at = time.perf_counter()
            self.headers = message.get("headers")
        return self.inner(message)


class AccessLog:
    """A request is wrapped in a `Seen` and handed to `end` on the event loop; a thread does
    everything else."""

    def __init__(
        self,
        form: str,
        counters: Counters,
        fd: int = 2,
        capacity: int = _CAPACITY,
        interval: float = _INTERVAL,
    ) -> None:
        self._json = form == "json"
        self._encoder = msgspec.json.Encoder()
        self._counters = counters
        self._fd = fd
        self._capacity = capacity
        self._interval = interval
        # The request path appends, the writer pops: each is one atomic deque operation.
        self._pending: deque[tuple[Scope, Seen, float]] = deque()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The writer's own: each second's text, the exact routes, how each model id is shown.
        self._second = -1
        self._second_text = ""
        self._routes: dict[tuple[str, str], str] = {}
        self._models: dict[str, str] = {}
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        """Start the writer; called on the event loop, whose thread alone touches the counters."""
        self._loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="buzz-access-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is waiting and stop the writer."""
        self._closing = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._drain()

    def end(self, scope: Scope, seen: Seen) -> None:
        """The request is over: its line waits for the writer, or is dropped if too many wait."""
        ended = time.perf_counter()
        if len(self._pending) < self._capacity:
            self._pending.append((scope, seen, ended))
        else:
            self._counters.add("access_log_dropped")

    async def observe(self, app: App, scope: Scope, receive: Receive, send: Send) -> None:
        """Run `app` for one request and log its line."""
        seen = Seen(send, time.perf_counter())
        try:
            await app(scope, receive, seen.send)
        finally:
            self.end(scope, seen)

    def _run(self) -> None:
        # A sleep, not a wait on an event: nothing on the request path has to wake the writer.
        while not self._closing:
            time.sleep(self._interval)
            self._drain()

    def _drain(self) -> None:
        pending = self._pending
        if not pending:
            return
        batch = []
        while pending:
            batch.append(pending.popleft())
        data = self._render(batch)
        try:
            self._write(data)
        except OSError:
            # stderr closed or broken: the lines are lost, and counted (on the loop's thread).
            if self._loop is not None and threading.current_thread() is self._thread:
                with contextlib.suppress(RuntimeError):  # the loop is gone: so is whoever reads counters
                    self._loop.call_soon_threadsafe(self._counters.add, "access_log_dropped", len(batch))
            else:
                self._counters.add("access_log_dropped", len(batch))
            return
        self.written += len(batch)

    def _render(self, batch: list[tuple[Scope, Seen, float]]) -> bytes:
        """The batch's lines. One loop with nothing called per line that can be avoided: every
        line is formatted on the same core the requests are served on."""
        as_json = self._json
        routes, models = self._routes, self._models
        lines: list[Any] = []
        # Arrival times come from the request path's monotonic clock; one reading of both clocks
        # per batch turns them into wall-clock times.
        offset = time.time() - time.perf_counter()
        for scope, seen, ended in batch:
            started = seen.started
            latency = (ended - started) * 1000.0
            x = scope.get(EXCHANGE)
            if x is not None:
                # The pipeline used the send without the wrapper: its exchange has the figures.
                principal = x.principal
                key_id = principal.key_id if principal is not None else None
                request_id = x.request_id
                model = x.model
                bytes_in = x.body_bytes or _declared_length(scope["headers"])
                bytes_out = x.bytes_out
                status = x.status or 500
                first = x.first_byte_at
                # No relayed chunk but a body: buzz's own error, head and body sent at the end.
                ttfb = (first - started) * 1000.0 if first is not None else latency if bytes_out else None
            else:
                key_id = scope.get(KEY_ID)
                request_id = _request_id(seen.headers)
                model = None
                bytes_in = _declared_length(scope["headers"])
                bytes_out = seen.bytes_out
                status = seen.status or 500  # nothing answered: the server's own 500 was
                head_at = seen.head_at
                ttfb = (head_at - started) * 1000.0 if head_at else None
            method: str = scope["method"]
            path: str = scope["path"]
            route = routes.get((method, path)) or route_template(method, path)
            if route == path:  # an exact route: there are few, so they are remembered
                routes[(method, path)] = path
            ms = int((started + offset) * 1000.0)
            second = ms // 1000
            if second != self._second:  # strftime is costly: once a second
                self._second = second
                self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            when = self._second_text + _MILLIS[ms - second * 1000]
            if as_json:
                lines.append(
                    _Line(
                        when,
                        request_id,
                        key_id,
                        method,
                        route,
                        model,
                        status,
                        int(latency * 10.0 + 0.5) / 10,
                        None if ttfb is None else int(ttfb * 10.0 + 0.5) / 10,
                        bytes_in,
                        bytes_out,
                    )
                )
                continue
            shown = "-" if model is None else models.get(model)
            if shown is None:
                if len(models) > 1024:
                    models.clear()
                shown = models[model] = model if _PLAIN.fullmatch(model) else msgspec.json.encode(model).decode()
            lines.append(
                (_TEXT_NO_TTFB if ttfb is None else _TEXT)
                % (
                    when,
                    method,
                    route or "-",
                    status,
                    request_id or "-",
                    key_id or "-",
                    shown,
                    latency,
                    "-" if ttfb is None else ttfb,
                    bytes_in,
                    bytes_out,
                )
            )
        if as_json:
            return self._encoder.encode_lines(lines)
        return "".join(lines).encode()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        start, size = 0, len(data)
        while start < size:
            stop = size
            if size - start > _PIPE_BUF:
                stop = data.rfind(b"\n", start, start + _PIPE_BUF) + 1
                if stop <= start:  # one line longer than a pipe's atomic write goes out alone
                    stop = data.find(b"\n", start) + 1 or size
            while start < stop:
                start += os.write(self._fd, view[start:stop])


def route_template(method: str, path: str) -> str | None:
    """The route a request matched, as a template; None when it matched none."""
    if path.startswith(_ADMIN):
        # Keep only the admin API's own words; names and ids become {id}.
        words = path[len(_ADMIN) :].split("/")[1:]
        return _ADMIN + "".join("/" + (word if word in _ADMIN_WORDS else "{id}") for word in words)
    if path == _CONSOLE or path.startswith(_CONSOLE + "/"):
        # The console's own words; key ids, token ids and project names become {id}.
        words = path[len(_CONSOLE) :].split("/")[1:]
        if words[:1] == ["static"]:
            return _CONSOLE + "/static/{file}"
        return _CONSOLE + "".join("/" + (word if word in _CONSOLE_WORDS or not word else "{id}") for word in words)
    endpoint, params = match(method, path)
    if endpoint is None:
        return None
    if "model" in params:
        version, _, rest = path[1:].partition("/")
        return f"/{version}/models/{{model}}:{rest.rpartition(':')[2]}"
    if "model_id" in params:
        return f"{path[: path.index('/models/')]}/models/{{id}}"
    return path  # an exact route is its own template


def _request_id(headers: Any) -> str | None:
    """buzz's own answers (errors) carry their request id in a header; nothing else does."""
    if headers:
        for name, value in headers:
            if name == b"x-buzz-request-id":
                return str(value.decode("latin-1"))
    return None


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
