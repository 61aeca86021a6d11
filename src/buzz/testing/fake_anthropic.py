"""A fake Anthropic upstream: a real HTTP server that records every request byte for byte.

Use it threaded in tests (`with FakeAnthropic() as fake: ... fake.url ...`) or standalone for
benchmarks and manual trials: `python -m buzz.testing.fake_anthropic --port 9001 [--workers N]`.

Scripted replies: `fake.enqueue(Reply(...))` answers the next request (FIFO) with exactly that
status, headers, body or chunks, timing, gzip or connection fault. With nothing queued the fake
answers like api.anthropic.com (wire.md §1):

- `POST /v1/messages` (any query string): JSON body required (400 otherwise; a body over 32 MB
  gets Cloudflare's HTML 413). `"stream": true` gives an SSE text stream, otherwise a JSON
  Message; `model` is echoed. Usage is deterministic: `input_tokens = max(1, len(body) // 4)`,
  `output_tokens = 5` (`1` in `message_start`). If the raw body contains `"cache_control"`,
  `cache_creation_input_tokens = max(1, len(body) // 8)`, split between 1h and 5m in proportion
  to how many of the `"cache_control"` occurrences are matched by a `"ttl":"1h"` (or
  `"ttl": "1h"`); `cache_read_input_tokens = 0`.
- `POST /v1/messages/count_tokens`: `{"input_tokens": max(1, len(body) // 4)}`.
- `GET /v1/models`, `GET /v1/models/{id}` (any `claude-*` id): Anthropic's model shapes.
- Anything else: 404 with the `not_found_error` envelope.

The request header `x-fake-scenario` (comma-separated, combinable) changes the default answer:

- `tool_use`: a text block then a tool_use block (named after the request's first tool).
- `thinking`: a thinking block with a signature, then text.
- `refusal`: `stop_reason: "refusal"` with `stop_details` (streams only).
- `midstream-error`: a 200 stream that ends with `event: error` (overloaded_error), no message_stop.
- `cache-read`: report the cached amount above as `cache_read_input_tokens` instead of writes.
- `pad`: whitespace padding inside every event's JSON, as the real API does.
- `slow`: 100 ms between stream events (100 ms before the headers when not streaming).
- `gzip`: gzip the response body (streams are gzipped per event with a sync flush).
- `drop`: close the connection halfway through the body, without the terminating chunk.
- `reset`: reset the connection before sending anything.
- `hang`: never answer (until the client gives up or the fake stops).
- `error-400`, `error-401`, `error-429`, `error-500`, `error-529`: that Anthropic error
  (429 with `retry-after: 1` and exhausted `anthropic-ratelimit-*`); `error-413`: Cloudflare's 413.
  Errors, `reset` and `hang` apply to every path.

Every response carries a fresh `request-id: req_…` unless the reply overrides it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import signal
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Sequence
from types import TracebackType

from aiohttp import web
from multidict import CIMultiDict

from buzz.testing.anthropic_replies import (
    JSON_TYPE,
    SSE_TYPE,
    Reply,
    cloudflare_413_reply,
    default_reply,
    error_reply,
    fake_usage,
    ratelimit_headers,
)
from buzz.testing.anthropic_sse import (
    PING_EVENT,
    count_tokens_json,
    delta_usage,
    error_body,
    message_json,
    midstream_error_events,
    model_info,
    models_page_json,
    new_id,
    rechunk,
    sse_event,
    text_stream_events,
    thinking_stream_events,
    tool_use_stream_events,
    usage_dict,
)
from buzz.testing.fake_wire import RecordedRequest, TeeHandler, TeeServer, take_request

__all__ = [
    "PING_EVENT",
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "cloudflare_413_reply",
    "count_tokens_json",
    "default_reply",
    "delta_usage",
    "error_body",
    "error_reply",
    "fake_usage",
    "main",
    "message_json",
    "midstream_error_events",
    "model_info",
    "models_page_json",
    "new_id",
    "ratelimit_headers",
    "rechunk",
    "sse_event",
    "text_stream_events",
    "thinking_stream_events",
    "tool_use_stream_events",
    "usage_dict",
]

_HANG_SECONDS = 3600.0
# Claude Code and big anthropic-beta lists send headers longer than aiohttp's 8 KiB default.
_MAX_HEADER_BYTES = 64 * 1024


def _response_headers(reply: Reply) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    headers["content-type"] = JSON_TYPE if reply.chunks is None else SSE_TYPE
    if reply.add_request_id:
        headers["request-id"] = new_id("req_")
    if reply.gzip:
        headers["content-encoding"] = "gzip"
    if reply.headers:
        for name in {n.lower() for n, _ in reply.headers}:
            headers.popall(name, None)
        headers.extend(reply.headers)
    return headers


def _gzip_chunks(chunks: Sequence[bytes]) -> list[bytes]:
    # A sync flush per chunk keeps each one decodable on arrival, like a streaming gzip proxy.
    compressor = zlib.compressobj(wbits=31)
    out = [compressor.compress(c) + compressor.flush(zlib.Z_SYNC_FLUSH) for c in chunks]
    if out:
        out[-1] += compressor.flush()
    return out


async def _drop(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is None:
        return
    # abort() discards unsent bytes; let what was already written reach the kernel first.
    for _ in range(1000):
        if transport.is_closing() or not transport.get_write_buffer_size():
            break
        await asyncio.sleep(0.001)
    transport.abort()


def _reset(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 makes close() send RST, so the client sees a reset rather than a clean EOF.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def play(request: web.BaseRequest, reply: Reply, sent_at: list[float] | None = None) -> web.StreamResponse:
    """Send `reply` as the answer to `request`, appending each chunk's `perf_counter()` send time
    to `sent_at`."""
    if reply.delay_before_headers > 0:
        await asyncio.sleep(reply.delay_before_headers)
    if reply.reset_before_headers:
        _reset(request)
        return web.Response()  # never written: the transport is gone
    if reply.hang:
        await asyncio.sleep(_HANG_SECONDS)  # cancelled by client disconnect or stop()
    headers = _response_headers(reply)
    if reply.chunks is None:
        body = reply.body or b""
        if reply.gzip:
            body = gzip.compress(body, mtime=0)
        return web.Response(status=reply.status, body=body, headers=headers)
    resp = web.StreamResponse(status=reply.status, headers=headers)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    chunks = _gzip_chunks(reply.chunks) if reply.gzip else reply.chunks
    delays = reply.delays or ()
    for i, chunk in enumerate(chunks):
        if reply.drop_after_chunks is not None and i >= reply.drop_after_chunks:
            break
        if i < len(delays) and delays[i] > 0:
            await asyncio.sleep(delays[i])
        await resp.write(chunk)
        if sent_at is not None:
            sent_at.append(time.perf_counter())
    if reply.drop_after_chunks is not None and reply.drop_after_chunks < len(chunks):
        await _drop(request)
        return resp
    await resp.write_eof()
    return resp


class FakeAnthropic:
    """The fake upstream, served from a daemon thread with its own event loop."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, record: bool = True) -> None:
        self._host = host
        self._port = port
        # Off for benchmarks, where recording every request would grow without bound.
        self._record = record
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._chunk_times: list[float] = []
        self._disconnects: list[float] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._startup_error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests and chunk times (queued replies stay queued)."""
        with self._lock:
            self._requests.clear()
            self._chunk_times = []
            self._disconnects = []

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def drain_replies(self) -> list[Reply]:
        """Unqueue and return every reply not used yet."""
        with self._lock:
            replies = list(self._replies)
            self._replies.clear()
        return replies

    def chunk_times(self) -> list[float]:
        """`time.perf_counter()` just after each chunk of the latest chunked reply was written
        (so far, if it is still streaming)."""
        with self._lock:
            return list(self._chunk_times)

    def disconnect_times(self) -> list[float]:
        """`time.perf_counter()` when a client went away before its reply was complete."""
        with self._lock:
            return list(self._disconnects)

    @property
    def pending_replies(self) -> int:
        with self._lock:
            return len(self._replies)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read()
        path = request.rel_url.raw_path
        if self._record:
            protocol = request.protocol
            if isinstance(protocol, TeeHandler):
                head, raw_headers = take_request(protocol.received)
            else:
                head, raw_headers = b"", tuple(request.raw_headers)
            recorded = RecordedRequest(request.method, path, request.rel_url.raw_query_string, raw_headers, body, head)
            with self._lock:
                self._requests.append(recorded)
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
        if reply is None:
            reply = default_reply(request.method, path, body, request.headers.get("x-fake-scenario"))
        sent_at: list[float] = []
        if reply.chunks is not None:
            with self._lock:
                self._chunk_times = sent_at
        try:
            return await play(request, reply, sent_at)
        except (asyncio.CancelledError, ConnectionError):
            # handler_cancellation: aiohttp cancels the handler when the client's connection closes.
            with self._lock:
                self._disconnects.append(time.perf_counter())
            raise

    async def open(self, sock: socket.socket) -> web.BaseRunner:
        """Serve on an already listening socket in the running loop; close with `runner.cleanup()`."""
        server = (TeeServer if self._record else web.Server)(
            self.handle,
            handler_cancellation=True,  # a client that goes away stops slow and hanging replies
            auto_decompress=False,  # record request bodies as sent, even compressed ones
            access_log=None,
            max_line_size=_MAX_HEADER_BYTES,
            max_field_size=_MAX_HEADER_BYTES,
        )
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        return runner

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FakeAnthropic already started")
        sock = socket.create_server((self._host, self._port), backlog=1024)
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), name="fake-anthropic", daemon=True)
        self._thread.start()
        ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("FakeAnthropic failed to start") from self._startup_error

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                runner = loop.run_until_complete(self.open(sock))
            except BaseException as exc:
                self._startup_error = exc
                sock.close()
                return
            finally:
                ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close(runner))
        finally:
            loop.close()

    async def _close(self, runner: web.BaseRunner) -> None:
        # Hanging and slow replies would otherwise hold shutdown for their full sleep.
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeAnthropic:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _serve_foreground(sock: socket.socket) -> None:
    fake = FakeAnthropic(record=False)

    async def serve() -> None:
        runner = await fake.open(sock)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m buzz.testing.fake_anthropic",
        description="Serve the fake Anthropic upstream's default behaviour (no recording).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the listening socket")
    args = parser.parse_args(argv)
    sock = socket.create_server((args.host, args.port), backlog=1024)
    children: list[int] = []
    for _ in range(max(1, args.workers) - 1):
        pid = os.fork()
        if pid == 0:
            try:
                _serve_foreground(sock)
            except KeyboardInterrupt:
                pass
            finally:
                os._exit(0)
        children.append(pid)
    # SIGTERM must reach the finally below, or the workers would outlive the parent.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"fake anthropic listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)
    try:
        _serve_foreground(sock)
    except KeyboardInterrupt:
        pass
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


if __name__ == "__main__":
    main()
