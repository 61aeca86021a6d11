"""Time to first byte of a streaming response, over one raw keep-alive socket, one request at a time.

A raw socket keeps the client's own overhead to a recv() call between the bytes arriving and
the clock being read, and the same client measures direct and through buzz, so it cancels out
of the difference.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

_RECV = 65536


@dataclass(frozen=True, slots=True)
class StreamTiming:
    ttfb_ns: int  # request written -> first byte of the response body
    total_ns: int  # request written -> last byte of the response body


def build_request(port: int, body: bytes, key: str | None, scenario: str | None = None) -> bytes:
    lines = [
        "POST /v1/messages HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        "content-type: application/json",
        "anthropic-version: 2023-06-01",
        f"content-length: {len(body)}",
    ]
    if key:
        lines.append(f"x-api-key: {key}")
    if scenario:
        lines.append(f"x-fake-scenario: {scenario}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _ChunkedEnd:
    """Finds the end of a chunked body incrementally, without copying what was already parsed."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> bool:
        self.buf += data
        while True:
            line_end = self.buf.find(b"\r\n", self._pos)
            if line_end < 0:
                return False
            size = int(bytes(self.buf[self._pos : line_end]).split(b";")[0], 16)
            chunk_end = line_end + 2 + size + 2
            if size == 0:
                return len(self.buf) >= chunk_end  # no trailers: "0\r\n\r\n"
            if len(self.buf) < chunk_end:
                return False
            self._pos = chunk_end


def exchange(sock: socket.socket, request: bytes, timeout_s: float) -> StreamTiming:
    """One request and its whole answer, which must be a 200, on a keep-alive socket."""
    sock.settimeout(timeout_s)
    sent = time.perf_counter_ns()
    sock.sendall(request)
    head = bytearray()
    first_body_ns = 0
    while True:
        data = sock.recv(_RECV)
        if not data:
            raise ConnectionError("server closed the connection before the headers ended")
        head += data
        end = head.find(b"\r\n\r\n")
        if end >= 0:
            break
    rest = bytes(head[end + 4 :])
    status_line, *header_lines = bytes(head[:end]).decode("latin-1").split("\r\n")
    if status_line.split(" ", 2)[1:2] != ["200"]:
        raise RuntimeError(f"request failed: {status_line}")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    if rest:
        first_body_ns = time.perf_counter_ns()
    else:
        rest = sock.recv(_RECV)
        first_body_ns = time.perf_counter_ns()
        if not rest:
            raise ConnectionError("server closed the connection before the body")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _ChunkedEnd()
        complete = body.feed(rest)
        while not complete:
            data = sock.recv(_RECV)
            if not data:
                raise ConnectionError("stream cut before its last chunk")
            complete = body.feed(data)
    else:
        remaining = int(headers.get("content-length", "0")) - len(rest)
        while remaining > 0:
            data = sock.recv(_RECV)
            if not data:
                raise ConnectionError("body cut short")
            remaining -= len(data)
    done = time.perf_counter_ns()
    if headers.get("connection", "").lower() == "close":
        raise ConnectionError("server asked to close; TTFB needs a keep-alive connection")
    return StreamTiming(first_body_ns - sent, done - sent)


def measure(port: int, request: bytes, samples: int, warmup: int, timeout_s: float = 30.0) -> list[StreamTiming]:
    """`warmup` discarded exchanges, then `samples` measured ones, sequentially on one connection."""
    timings: list[StreamTiming] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        # Without NODELAY a small request can wait on Nagle's algorithm and inflate every sample.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(warmup + samples):
            timing = exchange(sock, request, timeout_s)
            if i >= warmup:
                timings.append(timing)
    return timings
