"""The meter: a tap that reads usage from a copy of the response, after each chunk was relayed.

It never changes or delays what the client gets. It keeps at most the current, unfinished
event of a stream (or, for a plain JSON body, the body itself, in memory, until it is read);
nothing it sees is written anywhere. What a vendor's usage looks like lives in
`buzz.upstreams.<vendor>`; this module only turns bytes into events and bodies.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

from buzz.upstreams.base import MeterResult, UsageRules

log = logging.getLogger("buzz.meter")


def _identity(data: bytes) -> bytes:
    return data


def _decompressor(encoding: str) -> Callable[[bytes], bytes] | None:
    """A streaming decoder for the upstream's content-encoding (the client still gets the raw bytes)."""
    if not encoding:
        return _identity
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return _identity
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress
    if encoding == "deflate":
        return zlib.decompressobj().decompress
    if encoding == "br":
        try:
            import brotli  # optional: aiohttp[speedups] brings it
        except ImportError:
            return None
        return brotli.Decompressor().process  # type: ignore[no-any-return]
    return None


class SSEParser:
    """Incremental `text/event-stream` parsing: LF, CRLF or CR line ends; events split anywhere."""

    def __init__(self, on_event: Callable[[bytes | None, bytes], None]) -> None:
        self._on_event = on_event
        self._pending = b""
        self._event: bytes | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:
            # A CR at the very end may be the first half of a CRLF: wait for the next byte.
            held = data.endswith(b"\r")
            if held:
                data = data[:-1]
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                data += b"\r"
        lines = data.split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data or self._event is not None:
                event, payload = self._event, b"\n".join(self._data)
                self._event, self._data = None, []
                self._on_event(event, payload)
            return
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value

    def close(self) -> None:
        """A stream that ends without a final blank line still delivers its last event."""
        if self._pending and not self._pending.endswith(b"\r"):
            self._line(self._pending)
        self._pending = b""
        self._line(b"")


class Meter:
    """Feeds relayed chunks to a vendor's rules, as SSE events or as one JSON body."""

    def __init__(self, rules: UsageRules, content_type: str, content_encoding: str, status: int = 200) -> None:
        self._rules = rules
        # Vendors do not bill error answers; their bodies are read only for the error type.
        self._billable = status < 400
        self._decode = _decompressor(content_encoding)
        self._stream = content_type.lower().startswith("text/event-stream")
        self._parser = SSEParser(rules.on_event) if self._stream else None
        self._body: list[bytes] = []
        self._broken = self._decode is None

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        try:
            data = chunk if self._decode is _identity else self._decode(chunk)  # type: ignore[misc]
            if self._parser is not None:
                self._parser.feed(data)
            else:
                self._body.append(data)
        except Exception as exc:  # a meter fault must never reach the relay
            self._broken = True
            log.warning("usage meter stopped: %s", type(exc).__name__)

    def result(self, complete: bool) -> MeterResult:
        if not self._broken:
            try:
                if self._parser is not None:
                    if complete:
                        self._parser.close()
                elif complete:
                    body = self._body
                    self._rules.on_body(body[0] if len(body) == 1 else b"".join(body))
            except Exception as exc:
                self._broken = True
                log.warning("usage meter stopped: %s", type(exc).__name__)
        self._body = []
        result = self._rules.result(complete and not self._broken)
        if not self._billable:
            return MeterResult(None, "none", result.model, result.error_type)
        return result
