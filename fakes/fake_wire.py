"""Capture of what a fake upstream receives, byte for byte, beneath aiohttp's parser."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request exactly as received: raw path and query, headers in order, undecoded body.

    `raw_head` is the request line and header block byte for byte. `raw_headers` is parsed from
    it: names in their case, values with surrounding whitespace kept except the single space
    after the colon (HTTP parsers, aiohttp's too, strip it all, which would hide a relay that
    trims values).
    """

    method: str
    path: str
    query_string: str
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), as received, or None."""
        key = name.lower().encode("latin-1")
        for k, v in self.raw_headers:
            if k.lower() == key:
                return v.decode("utf-8", "surrogateescape")
        return None

    def json(self) -> Any:
        return json.loads(self.body)


class TeeHandler(RequestHandler):
    """Keeps the bytes of each connection until the request they carry has been recorded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received = bytearray()

    def data_received(self, data: bytes) -> None:
        self.received += data
        super().data_received(data)


class TeeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return TeeHandler(self, loop=self._loop, **self._kwargs)


def _skip_chunked(buf: bytearray, pos: int) -> int:
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return len(buf)
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size:
            pos += size + 2
            continue
        while True:  # trailer fields, then the empty line
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return len(buf)
            done, pos = eol == pos, eol + 2
            if done:
                return pos


def take_request(buf: bytearray) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
    """Cut the first request (head and body framing) off `buf`; return its head and headers."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        end = len(buf) - 4
    head = bytes(buf[: end + 4])
    headers: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers.append((name, value[1:] if value.startswith(b" ") else value))
    fields = {n.lower(): v.strip() for n, v in headers}
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        consumed = _skip_chunked(buf, end + 4)
    else:
        consumed = end + 4 + int(fields.get(b"content-length", b"0") or 0)
    del buf[:consumed]
    return head, tuple(headers)
