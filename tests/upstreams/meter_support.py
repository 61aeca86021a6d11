"""Feeding recorded bytes to a rules class through the real Meter, in arbitrary chunks."""

from __future__ import annotations

import random

from buzz.config import METER_MAX_BYTES
from buzz.proxy.meter import Meter
from buzz.upstreams.base import MeterResult, UsageRules

SSE = "text/event-stream; charset=utf-8"
JSON = "application/json; charset=UTF-8"


def split_randomly(data: bytes, rng: random.Random, pieces: int = 40) -> list[bytes]:
    """`data` cut at random byte offsets: inside JSON, inside UTF-8 characters, inside CRLF."""
    cuts = sorted(rng.sample(range(1, len(data)), k=min(pieces, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def run(
    rules: UsageRules,
    chunks: list[bytes] | bytes,
    content_type: str = SSE,
    *,
    complete: bool = True,
    status: int = 200,
    encoding: str = "",
    max_bytes: int = METER_MAX_BYTES,
) -> MeterResult:
    meter = Meter(rules, content_type, encoding, status, max_bytes)
    for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
        meter.feed(chunk)
    return meter.result(complete=complete)
