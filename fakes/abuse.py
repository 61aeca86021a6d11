"""Upstream answers that misbehave on purpose, made while they are sent (`Reply.stream`).

Each is Anthropic-shaped and far larger than anything a meter should hold: a huge JSON body, an
SSE line that never ends, one SSE event spread over a huge number of data lines, a flood of tiny
events, and a gzip bomb. None of them is ever held whole: every builder repeats a few prepared blocks, so a
test can relay hundreds of megabytes (and decode to a gigabyte) at the cost of the wire alone.
The fake records the size and SHA-256 of what it sent (`FakeUpstream.sent_bodies`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from fakes.anthropic_sse import sse_event
from fakes.replies import JSON_TYPE, SSE_TYPE, Reply, dumps

BLOCK = 256 * 1024
MODEL = "claude-sonnet-4-6"


def _filler(total: int, block: bytes) -> Iterator[bytes]:
    """`total` bytes of `block` repeated (the last one cut short)."""
    whole, rest = divmod(total, len(block))
    for _ in range(whole):
        yield block
    if rest:
        yield block[:rest]


def _headers(content_type: str, request_id: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("content-type", content_type), ("request-id", request_id), *extra]


def _message_start(input_tokens: int) -> bytes:
    usage = {"input_tokens": input_tokens, "output_tokens": 1}
    message = {"id": "msg_abuse", "type": "message", "role": "assistant", "model": MODEL, "usage": usage}
    return sse_event("message_start", {"type": "message_start", "message": message})


def _message_json_parts(usage: dict[str, int]) -> tuple[bytes, bytes]:
    """A Message body cut where its text goes: (everything before the text, everything after)."""
    head = b'{"id":"msg_abuse","type":"message","role":"assistant","model":"' + MODEL.encode()
    head += b'","content":[{"type":"text","text":"'
    tail = b'"}],"stop_reason":"end_turn","stop_sequence":null,"usage":' + dumps(usage) + b"}"
    return head, tail


def huge_json_body(text_bytes: int, request_id: str = "req_abuse_body") -> Reply:
    """A non-streamed Message whose text is `text_bytes` long; its usage comes last, as it does."""
    head, tail = _message_json_parts({"input_tokens": 12, "output_tokens": text_bytes // 4})

    def chunks() -> Iterator[bytes]:
        yield head
        yield from _filler(text_bytes, b"a" * BLOCK)
        yield tail

    return Reply(headers=_headers(JSON_TYPE, request_id), stream=chunks)


def endless_line(line_bytes: int, request_id: str = "req_abuse_line") -> Reply:
    """A stream that starts normally, then sends one `data:` line that never ends (until EOF)."""

    def chunks() -> Iterator[bytes]:
        yield _message_start(12)
        yield b"event: content_block_delta\ndata: "
        yield from _filler(line_bytes, b"x" * BLOCK)

    return Reply(headers=_headers(SSE_TYPE, request_id), stream=chunks)


def huge_event(event_bytes: int, cache_read: int, request_id: str = "req_abuse_event") -> Reply:
    """A stream with one event whose JSON spans `event_bytes` of data lines, then the usual end.

    The final `message_delta` reports `cache_read` cache-read tokens, which nothing else does: a
    meter that still reads the events after the huge one shows it in the row.
    """
    line = b'data: "' + b"e" * 1000 + b'",\n'
    block = line * (BLOCK // len(line))
    opening = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    opening += b'"delta":{"type":"text_delta","text":"hi"},"padding":[\n'
    final = {"output_tokens": 2, "cache_read_input_tokens": cache_read}
    ending = [
        sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse_event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": final},
        ),
        sse_event("message_stop", {"type": "message_stop"}),
    ]

    def chunks() -> Iterator[bytes]:
        yield _message_start(12)
        yield sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        yield opening
        yield from _filler(event_bytes - event_bytes % len(line), block)
        yield b'data: "e"]}\n\n'
        yield from ending

    return Reply(headers=_headers(SSE_TYPE, request_id), stream=chunks)


def tiny_events(total_bytes: int, request_id: str = "req_abuse_tiny") -> Reply:
    """A stream that starts normally, then sends `total_bytes` of the smallest events there are."""
    block = b"data:{}\n\n" * (BLOCK // 9)

    def chunks() -> Iterator[bytes]:
        yield _message_start(12)
        yield from _filler(total_bytes - total_bytes % 9, block)

    return Reply(headers=_headers(SSE_TYPE, request_id), stream=chunks)


def gzip_bomb_parts(text_bytes: int, unit: int = 16 * 1024 * 1024) -> tuple[bytes, bytes, int, bytes]:
    """A gzip Message body whose text is about `text_bytes` of one letter, as (start, repeated
    unit, times, end): `start + unit * times + end` is a valid gzip stream.

    Each unit is deflated after a full flush, which resets the compressor, so the same bytes can
    be sent again and again; compressing a gigabyte for real would take seconds.
    """
    head, tail = _message_json_parts({"input_tokens": 12, "output_tokens": text_bytes // 4})
    times = max(1, text_bytes // unit)
    text = b"a" * unit
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeated = deflate.compress(text) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.compress(tail) + deflate.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(times):
        crc = zlib.crc32(text, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + unit * times + len(tail)
    # RFC 1952: magic, deflate, no flags, no mtime, best compression, unknown OS.
    start = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + first
    return start, repeated, times, last + struct.pack("<II", crc, size & 0xFFFFFFFF)


def gzip_bomb(text_bytes: int, request_id: str = "req_abuse_bomb") -> Reply:
    """A non-streamed gzip Message of about `text_bytes` decoded, a thousandth of that on the wire."""
    start, repeated, times, end = gzip_bomb_parts(text_bytes)

    def chunks() -> Iterator[bytes]:
        yield start
        for _ in range(times):
            yield repeated
        yield end

    return Reply(headers=_headers(JSON_TYPE, request_id, ("content-encoding", "gzip")), stream=chunks)
