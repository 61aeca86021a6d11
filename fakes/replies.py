"""What any fake upstream answers with: the `Reply` script type and the shared scenario plumbing.

Vendor modules (`anthropic_replies`, `openai_replies`, `google_replies`) build their default
answers from these pieces, so `slow`, `gzip`, `drop`, `reset` and `hang` mean the same thing on
every fake.
"""

from __future__ import annotations

import hashlib
import json
import string
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"

# Long enough that a meter or relay blocking on the next chunk shows up in timing tests.
SLOW_EVENT_GAP = 0.1
# `ticks`: a long text stream at a steady pace, for measuring many open streams at once.
TICKS = 100
TICK_GAP = 0.05

_ALPHANUMERIC = string.ascii_letters + string.digits
# json.dumps with options builds a new encoder per call, a noticeable share of a stream's cost;
# the encoder keeps no state between calls, so one instance serves every thread.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class Reply:
    """One scripted answer. `body` is sent with content-length; `chunks` are sent chunked, one
    write each; `stream` makes chunks while they are sent, for answers too large to hold
    (`fakes.abuse`), and the fake records their size and SHA-256 (`FakeUpstream.sent_bodies`).
    Unless overridden in `headers`, every reply gets a content-type (`application/json` for
    `body` and `stream`, SSE for `chunks`) and, on fakes that have one, a fresh request-id
    header."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    chunks: list[bytes] | None = None
    stream: Callable[[], Iterator[bytes]] | None = None
    delays: list[float] | None = None
    delay_before_headers: float = 0.0
    gzip: bool = False
    drop_after_chunks: int | None = None
    reset_before_headers: bool = False
    hang: bool = False
    # Replies made by something in front of the vendor (Cloudflare) lack its request id.
    add_request_id: bool = True
    # Chunk i waits until gates[i] is set (None: no wait), so a test decides when each piece
    # leaves and can check the previous one arrived first, with no clock involved.
    gates: list[threading.Event | None] | None = None


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON; non-ASCII stays raw so multi-byte characters really occur on the wire."""
    return _ENCODER.encode(obj).encode()


def stable_token(*parts: object, length: int = 24, alphabet: str = _ALPHANUMERIC) -> str:
    """Characters from `alphabet` derived from `parts`, so builders stay pure yet ids look random."""
    n = int.from_bytes(hashlib.sha256(repr(parts).encode()).digest())
    chars = []
    for _ in range(length):
        n, r = divmod(n, len(alphabet))
        chars.append(alphabet[r])
    return "".join(chars)


def header_seconds(value: float) -> str:
    """A delay as a header value: whole seconds without a fraction, as servers send them."""
    return str(int(value)) if float(value).is_integer() else str(value)


def scenarios(value: str | None) -> frozenset[str]:
    """The `x-fake-scenario` header's comma-separated, combinable scenario names."""
    return frozenset(s.strip() for s in value.split(",")) if value else frozenset()


def transport_fault(kinds: frozenset[str]) -> Reply | None:
    """`hang` or `reset`, which no vendor format can express, or None."""
    if "hang" in kinds:
        return Reply(hang=True)
    if "reset" in kinds:
        return Reply(reset_before_headers=True)
    return None


def json_delivery(body: bytes, kinds: frozenset[str], headers: Sequence[tuple[str, str]] = ()) -> Reply:
    """A one-piece body shaped by the `slow`, `gzip` and `drop` scenarios."""
    if "drop" in kinds:
        half = len(body) // 2
        # Chunked, so the client sees a body cut short rather than a short content-length read.
        out = [("content-type", JSON_TYPE), *headers]
        return Reply(chunks=[body[:half], body[half:]], headers=out, drop_after_chunks=1)
    delay = SLOW_EVENT_GAP if "slow" in kinds else 0.0
    return Reply(body=body, headers=list(headers), gzip="gzip" in kinds, delay_before_headers=delay)


def stream_delivery(chunks: list[bytes], kinds: frozenset[str], headers: Sequence[tuple[str, str]] = ()) -> Reply:
    """Chunks shaped by `slow` or `ticks` (a gap before each but the first), `gzip` and `drop`
    (halfway)."""
    gap = SLOW_EVENT_GAP if "slow" in kinds else TICK_GAP if "ticks" in kinds else None
    return Reply(
        headers=list(headers),
        chunks=chunks,
        delays=[0.0] + [gap] * (len(chunks) - 1) if gap is not None else None,
        gzip="gzip" in kinds,
        drop_after_chunks=len(chunks) // 2 if "drop" in kinds else None,
    )


def json_object(body: bytes) -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
