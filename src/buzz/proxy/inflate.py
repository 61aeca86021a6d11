"""The meter's decoder of compressed answers: a copy only, in bounded steps, bomb-proof.

The client gets the compressed bytes as they arrived; the meter reads usage from a decoded copy.
A few kilobytes of gzip can inflate to gigabytes, so nothing here decodes in one go. One
decompress call yields at most `STEP` bytes, one chunk of the answer at most `FEED_BUDGET`, and
input the budget did not cover waits, compressed, for the next chunk (or for the end of the
answer). Two things count as a compression bomb and stop the decoding: decoded bytes past
`MAX_RATIO` times the compressed bytes (beyond a first `FREE_BYTES`, so a small answer may
compress as well as it likes), and more compressed input waiting than `max_bytes`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Protocol

# The most one decompress call produces, and the most input it is handed at a time (zlib copies
# the input it did not consume, so a small input slice keeps that copy small).
STEP = 64 * 1024
# The most one chunk of the answer may decode to before the rest waits for the next chunk: about
# a millisecond of inflating and parsing.
FEED_BUDGET = 1024 * 1024
# JSON and SSE text compress 5 to 20 times, and a stream gzipped as it goes (a flush per event)
# less; deflate's ceiling, the shape of a bomb, is about 1032. Only a body can compress better,
# such as a model repeating one word for its whole answer (about 700 to 1): answers fit in the
# first FREE_BYTES, which are decoded whatever their ratio.
MAX_RATIO = 100
FREE_BYTES = 1024 * 1024


class TooCompressed(Exception):
    """The answer decodes to more than the meter accepts for what was received."""


class _Codec(Protocol):
    def step(self, data: bytes | memoryview, limit: int) -> tuple[bytes, int, bool, bool]:
        """Decode from `data` about `limit` bytes at most: (output, input used, output may be
        waiting without more input, the end of the compressed stream was read)."""
        ...


class _Zlib:
    __slots__ = ("_z",)

    def __init__(self, wbits: int) -> None:
        self._z = zlib.decompressobj(wbits=wbits)

    def step(self, data: bytes | memoryview, limit: int) -> tuple[bytes, int, bool, bool]:
        z = self._z
        out = z.decompress(data, limit)
        # A full output may leave part of a back-reference inside zlib with no input left.
        return out, len(data) - len(z.unconsumed_tail), len(out) == limit, z.eof


class _Brotli:
    """brotli 1.2's bounded API: a decoder that cannot take input yet must first give output.

    It takes all the input it is handed (at most `STEP`) and keeps what it could not decode yet.
    Its output limit is rounded up to its own buffer size (about 32 KiB), so a call may give a
    little more than asked; a full output means more may be waiting, even when it says it can
    take input again.
    """

    __slots__ = ("_d",)

    def __init__(self, decompressor: Any) -> None:
        self._d = decompressor

    def step(self, data: bytes | memoryview, limit: int) -> tuple[bytes, int, bool, bool]:
        d = self._d
        if d.can_accept_more_data():
            out, used = d.process(bytes(data), output_buffer_limit=limit), len(data)
        else:
            out, used = d.process(b"", output_buffer_limit=limit), 0
        return out, used, len(out) >= limit or not d.can_accept_more_data(), d.is_finished()


def codec(encoding: str) -> _Codec | None:
    """The decoder for a content-encoding, or None when buzz cannot decode it within bounds."""
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Zlib(zlib.MAX_WBITS)
    if encoding == "br":
        try:
            import brotli  # a dependency; imported here, on the first brotli answer
        except ImportError:
            return None
        decompressor = brotli.Decompressor()
        # Releases before 1.2 decode a whole input at once, whatever it inflates to.
        return _Brotli(decompressor) if hasattr(decompressor, "can_accept_more_data") else None
    return None


class Inflater:
    """Decodes a compressed answer chunk by chunk, each within a budget, handing output on."""

    __slots__ = ("_codec", "_input", "_max", "_more", "_pos", "decoded", "ended", "received")

    def __init__(self, codec: _Codec, max_bytes: int) -> None:
        self._codec = codec
        self._max = max_bytes
        self._input = b""  # compressed bytes from `_pos` on are not decoded yet
        self._pos = 0
        self._more = False
        self.ended = False  # the compressed stream is over: anything after it is not decoded
        self.received = 0
        self.decoded = 0

    @property
    def backlog(self) -> int:
        """Compressed bytes received and not decoded yet."""
        return len(self._input) - self._pos

    @property
    def pending(self) -> bool:
        """Something is left to decode from what was received."""
        return not self.ended and (self._pos < len(self._input) or self._more)

    def feed(self, chunk: bytes, emit: Callable[[bytes], None], budget: int = FEED_BUDGET) -> None:
        """Decode at most `budget` bytes, handing each piece to `emit`; the rest waits for later.
        `emit` may raise to stop early."""
        self.received += len(chunk)
        if self.ended:
            return
        if chunk:
            # The waiting input is at most max_bytes: copying it once per chunk stays linear.
            self._input = self._input[self._pos :] + chunk if self._pos < len(self._input) else chunk
            self._pos = 0
        try:
            self._run(budget, emit)
        finally:  # also when `emit` stopped the decoding early: what waits must fit all the same
            if self.backlog > self._max:
                raise TooCompressed

    def finish(self, emit: Callable[[bytes], None]) -> None:
        """At the end of the answer, decode what waits; more than max_bytes of it is a bomb."""
        self._run(self._max, emit)
        if not self.ended and (self.backlog or self._more):
            raise TooCompressed

    def release(self) -> None:
        """Let go of the input waiting: nothing more will be decoded."""
        self._input, self._pos, self.ended = b"", 0, True

    def _run(self, budget: int, emit: Callable[[bytes], None]) -> None:
        data = self._input
        produced = 0
        with memoryview(data) as view:
            while produced < budget and not self.ended:
                if self._pos < len(data):
                    piece: bytes | memoryview = view[self._pos : self._pos + STEP]
                elif self._more:
                    piece = b""
                else:
                    break
                out, used, self._more, finished = self._codec.step(piece, min(STEP, budget - produced))
                # brotli says it finished once it has read the end, maybe with output still to give.
                self.ended = finished and not self._more
                self._pos += used
                if out:
                    produced += len(out)
                    self.decoded += len(out)
                    if self.decoded > MAX_RATIO * (self.received - self.backlog) + FREE_BYTES:
                        raise TooCompressed
                    emit(out)
                elif not used:
                    break  # neither input taken nor output given: wait for more input
        if self.ended:
            self._input, self._pos = b"", 0  # trailing bytes after the end are never decoded
