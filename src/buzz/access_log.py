"""The access log: one line per request, written off the event loop.

A line holds the arrival time (UTC), the request id, the key id, the method, the route's
template (never the raw path, which can carry ids), the model, the status, the latency and the
time to the first byte in milliseconds, and the request and response body sizes. Never a body,
a query string, a header value or a key.

The request path only appends a tuple of those figures to a bounded deque; a thread formats and
writes them in batches. When the output cannot keep up (a stderr pipe nobody reads), the deque
fills and further lines are dropped and counted (`access_log_dropped`), so the log can neither
grow without bound nor make a request wait.
"""

from __future__ import annotations

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
from buzz.routes import STREAM_GENERATE, match

App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where the gateway leaves the key id of a request answered outside the pipeline (/v1/models).
KEY_ID = "buzz.key_id"

_CAPACITY = 16_384  # lines waiting for the writer; a few MB at most
_INTERVAL = 0.05  # seconds between the writer's batches
# A write to a pipe of at most this many bytes is not interleaved with other writers' output
# (the log module's lines on the same stderr); a batch goes out in pieces of whole lines this size.
_PIPE_BUF = 4096
_ADMIN = "/admin/api"
_ADMIN_WORDS = frozenset({"projects", "keys", "counters", "balance", "revoke"})
# Client text (a model id) that can go into a text line as it is; anything else is JSON-quoted,
# so a line can never be split or forged.
_PLAIN = re.compile(r"[A-Za-z0-9._:/@+\-]+")

# (ts, method, path, status, started, head_at, ended, request_id, key_id, model, bytes_in, bytes_out)
Record = tuple[float, str, str, int, float, float | None, float, str | None, str | None, str | None, int, int]


class _Seen:
    """What one response has shown so far, collected by wrapping the ASGI `send`."""

    __slots__ = ("bytes_out", "head_at", "headers", "inner", "status")

    def __init__(self, inner: Send) -> None:
        self.inner = inner
        self.status = 0
        self.head_at: float | None = None
        self.bytes_out = 0
        self.headers: Any = None

    def send(self, message: Message) -> Awaitable[None]:
        # A plain function that hands back the inner send's awaitable: no coroutine of its own.
        if message["type"] == "http.response.body":
            self.bytes_out += len(message.get("body", b""))
        elif message["type"] == "http.response.start":
            self.status = message["status"]
            self.head_at = time.perf_counter()
            self.headers = message.get("headers")
        return self.inner(message)


class AccessLog:
    def __init__(
        self,
        form: str,
        counters: Counters,
        fd: int = 2,
        capacity: int = _CAPACITY,
        interval: float = _INTERVAL,
    ) -> None:
        self._json = form == "json"
        self._counters = counters
        self._fd = fd
        self._capacity = capacity
        self._interval = interval
        self._pending: deque[Record] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._second = -1
        self._second_text = ""
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="buzz-access-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is waiting and stop the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._drain()

    async def observe(self, app: App, scope: Scope, receive: Receive, send: Send) -> None:
        """Run `app` for one request and log its line."""
        ts = time.time()
        started = time.perf_counter()
        seen = _Seen(send)
        failed = True
        try:
            await app(scope, receive, seen.send)
            failed = False
        finally:
            self._record(scope, seen, ts, started, failed)

    def _record(self, scope: Scope, seen: _Seen, ts: float, started: float, failed: bool) -> None:
        ended = time.perf_counter()
        pending = self._pending
        if len(pending) >= self._capacity:
            self._counters.add("access_log_dropped")
            return
        status = seen.status
        x = scope.get(EXCHANGE)
        if x is not None:
            principal = x.principal
            key_id = principal.key_id if principal is not None else None
            request_id: str | None = x.request_id
            model = x.model
            declared = x.headers.get(b"content-length")
            bytes_in = x.body_bytes or (int(declared) if declared and declared.isdigit() else 0)
            if not status:
                status = x.status or (500 if failed else 499)
        else:
            key_id = scope.get(KEY_ID)
            request_id = _request_id(seen.headers)
            model = None
            bytes_in = _declared_length(scope["headers"])
            if not status:
                status = 500 if failed else 499
        pending.append(
            (
                ts,
                scope["method"],
                scope["path"],
                status,
                started,
                seen.head_at,
                ended,
                request_id,
                key_id,
                model,
                bytes_in,
                seen.bytes_out,
            )
        )

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._drain()

    def _drain(self) -> None:
        pending = self._pending
        if not pending:
            return
        pieces: list[bytes] = []
        piece: list[bytes] = []
        size = 0
        count = 0
        while pending:
            line = self._format(pending.popleft())
            count += 1
            if piece and size + len(line) > _PIPE_BUF:
                pieces.append(b"".join(piece))
                piece, size = [], 0
            piece.append(line)
            size += len(line)
        pieces.append(b"".join(piece))
        try:
            for data in pieces:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
        except OSError:
            # stderr closed or broken: the lines are lost, and counted.
            self._counters.add("access_log_dropped", count)
            return
        self.written += count

    def _format(self, record: Record) -> bytes:
        ts, method, path, status, started, head_at, ended, request_id, key_id, model, bytes_in, bytes_out = record
        when = self._time(ts)
        route = route_template(method, path)
        latency = round((ended - started) * 1000.0, 1)
        ttfb = None if head_at is None else round((head_at - started) * 1000.0, 1)
        if self._json:
            return (
                msgspec.json.encode(
                    {
                        "time": when,
                        "request_id": request_id,
                        "key_id": key_id,
                        "method": method,
                        "route": route,
                        "model": model,
                        "status": status,
                        "latency_ms": latency,
                        "ttfb_ms": ttfb,
                        "bytes_in": bytes_in,
                        "bytes_out": bytes_out,
                    }
                )
                + b"\n"
            )
        return (
            f"{when} {method} {route or '-'} {status} request_id={request_id or '-'} key_id={key_id or '-'}"
            f" model={_plain(model)} latency_ms={latency} ttfb_ms={'-' if ttfb is None else ttfb}"
            f" bytes_in={bytes_in} bytes_out={bytes_out}\n"
        ).encode()

    def _time(self, ts: float) -> str:
        # strftime is costly: the writer formats each second once, then only the milliseconds.
        second = int(ts)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((ts - second) * 1000):03d}+00:00"


def route_template(method: str, path: str) -> str | None:
    """The route a request matched, as a template; None when it matched none."""
    if path.startswith(_ADMIN):
        # Keep only the admin API's own words; names and ids become {id}.
        words = path[len(_ADMIN) :].split("/")[1:]
        return _ADMIN + "".join("/" + (word if word in _ADMIN_WORDS else "{id}") for word in words)
    endpoint, params = match(method, path)
    if endpoint is None:
        return None
    if "model" in params:
        version = "v1beta" if path.startswith("/v1beta/") else "v1"
        action = "streamGenerateContent" if endpoint is STREAM_GENERATE else "generateContent"
        return f"/{version}/models/{{model}}:{action}"
    if "model_id" in params:
        return "/v1/models/{id}"
    return path  # an exact route is its own template


def _plain(text: str | None) -> str:
    if text is None:
        return "-"
    return text if _PLAIN.fullmatch(text) else msgspec.json.encode(text).decode()


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
