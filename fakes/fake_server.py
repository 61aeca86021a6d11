"""A vendor-neutral fake upstream: a real HTTP server that records every request byte for byte.

`FakeUpstream` serves from a daemon thread with its own event loop. Each request is recorded
(`requests`, see `RecordedRequest`), then answered by the oldest queued `Reply` (`enqueue`) or,
with none queued, by the `default_reply(method, path, query_string, headers, body)` callable the
fake was made with. `headers` is aiohttp's case-insensitive view of the request headers;
`path` and `query_string` are raw (still percent-encoded). Vendor fakes (`FakeAnthropic`,
`FakeOpenAI`, `FakeXAI`, `FakeGoogle`) are `FakeUpstream`s with a vendor's default behaviour.

`serve_main` runs a fake standalone (no recording), optionally as several forked workers on one
listening socket, for benchmarks and manual trials.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import os
import signal
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiohttp import web
from multidict import CIMultiDict

from fakes.fake_wire import RecordedRequest, TeeHandler, TeeServer, take_request
from fakes.replies import JSON_TYPE, SSE_TYPE, Reply

__all__ = ["DefaultReply", "FakeUpstream", "RecordedRequest", "Reply", "SentBody", "play", "serve_main"]

DefaultReply = Callable[[str, str, str, Mapping[str, str], bytes], Reply]
"""`(method, path, query_string, headers, body) -> Reply`: the answer when nothing is queued."""

_HANG_SECONDS = 3600.0
# Claude Code and big anthropic-beta lists send headers longer than aiohttp's 8 KiB default.
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SentBody:
    """What a generated (`Reply.stream`) answer put on the wire: its size and SHA-256."""

    size: int
    sha256: str


def _response_headers(reply: Reply, request_id: tuple[str, Callable[[], str]] | None) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    headers["content-type"] = JSON_TYPE if reply.chunks is None else SSE_TYPE
    if reply.add_request_id and request_id is not None:
        name, make = request_id
        headers[name] = make()
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


async def _play_stream(
    request: web.BaseRequest, reply: Reply, headers: CIMultiDict[str], sent: list[SentBody] | None
) -> web.StreamResponse:
    assert reply.stream is not None
    resp = web.StreamResponse(status=reply.status, headers=headers)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    digest = hashlib.sha256()
    size = 0
    for chunk in reply.stream():
        digest.update(chunk)
        size += len(chunk)
        await resp.write(chunk)  # waits while the client is behind: nothing piles up here
    await resp.write_eof()
    if sent is not None:
        sent.append(SentBody(size, digest.hexdigest()))
    return resp


async def play(
    request: web.BaseRequest,
    reply: Reply,
    sent_at: list[float] | None = None,
    request_id: tuple[str, Callable[[], str]] | None = None,
    sent: list[SentBody] | None = None,
) -> web.StreamResponse:
    """Send `reply` as the answer to `request`, appending each chunk's `perf_counter()` send time
    to `sent_at`, and a generated answer's size and digest to `sent`. `request_id` is the
    (header name, id factory) a vendor stamps on its replies."""
    if reply.delay_before_headers > 0:
        await asyncio.sleep(reply.delay_before_headers)
    if reply.reset_before_headers:
        _reset(request)
        return web.Response()  # never written: the transport is gone
    if reply.hang:
        await asyncio.sleep(_HANG_SECONDS)  # cancelled by client disconnect or stop()
    headers = _response_headers(reply, request_id)
    if reply.stream is not None:
        return await _play_stream(request, reply, headers, sent)
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
        gate = reply.gates[i] if reply.gates is not None and i < len(reply.gates) else None
        if gate is not None:
            await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        await resp.write(chunk)
        if sent_at is not None:
            sent_at.append(time.perf_counter())
    if reply.drop_after_chunks is not None and reply.drop_after_chunks < len(chunks):
        await _drop(request)
        return resp
    await resp.write_eof()
    return resp


class FakeUpstream:
    """A fake upstream served from a daemon thread with its own event loop.

    `request_id_header` names the header that carries a fresh `new_request_id()` on every reply
    (unless the reply sets it or has `add_request_id=False`); None sends no such header.
    `record=False` is for benchmarks, where recording every request would grow without bound.
    """

    def __init__(
        self,
        default_reply: DefaultReply,
        name: str = "upstream",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        request_id_header: str | None = None,
        new_request_id: Callable[[], str] | None = None,
    ) -> None:
        if (request_id_header is None) != (new_request_id is None):
            raise ValueError("request_id_header and new_request_id go together")
        self.name = name
        self._default_reply = default_reply
        self._request_id = (
            (request_id_header, new_request_id)
            if request_id_header is not None and new_request_id is not None
            else None
        )
        self._host = host
        self._port = port
        self._record = record
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._chunk_times: list[float] = []
        self._disconnects: list[float] = []
        self._sent: list[SentBody] = []
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
            self._sent = []

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

    def sent_bodies(self) -> list[SentBody]:
        """Size and SHA-256 of each generated (`Reply.stream`) answer sent in full, oldest first."""
        with self._lock:
            return list(self._sent)

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
        query = request.rel_url.raw_query_string
        if self._record:
            protocol = request.protocol
            if isinstance(protocol, TeeHandler):
                head, raw_headers = take_request(protocol.received)
            else:
                head, raw_headers = b"", tuple(request.raw_headers)
            recorded = RecordedRequest(request.method, path, query, raw_headers, body, head)
            with self._lock:
                self._requests.append(recorded)
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
        if reply is None:
            reply = self._default_reply(request.method, path, query, request.headers, body)
        sent_at: list[float] = []
        if reply.chunks is not None:
            with self._lock:
                self._chunk_times = sent_at
        sent: list[SentBody] = []
        try:
            response = await play(request, reply, sent_at, self._request_id, sent)
        except (asyncio.CancelledError, ConnectionError):
            # handler_cancellation: aiohttp cancels the handler when the client's connection closes.
            with self._lock:
                self._disconnects.append(time.perf_counter())
            raise
        with self._lock:
            self._sent.extend(sent)
        return response

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
            raise RuntimeError(f"{type(self).__name__} already started")
        sock = socket.create_server((self._host, self._port), backlog=1024)
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._startup_error

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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _serve_foreground(make: Callable[[], FakeUpstream], sock: socket.socket, early: threading.Event) -> None:
    """Serve until SIGTERM or SIGINT; `early` is set if one came before the loop could take it."""
    fake = make()

    async def serve() -> None:
        # The loop's own signal handling wakes it at once; an exception raised from a plain
        # signal handler waited for the next I/O event.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if early.is_set():
            return
        runner = await fake.open(sock)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


def serve_main(
    make: Callable[[], FakeUpstream],
    *,
    name: str,
    prog: str,
    default_port: int,
    argv: Sequence[str] | None = None,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Command-line entry of a standalone fake: `make()` builds one (non-recording) fake per worker.

    `parents` are parsers (made with `add_help=False`) of the caller's own options, listed in
    `--help` and accepted here. Prints `fake NAME listening on URL` once the socket is bound, so
    a parent process can read the port.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Serve the fake {name} upstream's default behaviour (no recording).",
        parents=list(parents),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the listening socket")
    args = parser.parse_args(argv)
    sock = socket.create_server((args.host, args.port), backlog=1024)
    # Until each process's loop takes them over, a stop request is only noted (workers inherit it).
    early = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: early.set())
    children: list[int] = []
    for _ in range(max(1, args.workers) - 1):
        pid = os.fork()
        if pid == 0:
            try:
                _serve_foreground(make, sock, early)
            except KeyboardInterrupt:
                pass
            finally:
                os._exit(0)
        children.append(pid)
    print(f"fake {name} listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)
    try:
        _serve_foreground(make, sock, early)
    except KeyboardInterrupt:
        pass
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
