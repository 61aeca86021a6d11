"""One request's passage through buzz: what each stage learns, for settle to turn into a row."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from buzz.proxy.auth import Principal
from buzz.proxy.meter import MeterResult

_MAX_TAGS = 16
_MAX_TAG_LENGTH = 64


def new_request_id() -> str:
    # Time-ordered (milliseconds) then random, so ids sort by arrival in the ledger.
    return f"req_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def parse_tags(value: bytes | None) -> tuple[str, ...]:
    """`x-buzz-tags: feature=search,team=ml` -> ("feature=search", "team=ml"), bounded in size."""
    if not value:
        return ()
    tags = []
    for part in value.decode("latin-1").split(","):
        tag = part.strip()[:_MAX_TAG_LENGTH]
        if tag and tag not in tags:
            tags.append(tag)
    return tuple(tags[:_MAX_TAGS])


@dataclass(slots=True)
class Exchange:
    surface: str
    headers: dict[bytes, bytes]  # first value of each request header, for lookups
    request_id: str = field(default_factory=new_request_id)
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    body_bytes: int = 0
    principal: Principal | None = None
    provider: str | None = None
    model: str | None = None
    user_id: str | None = None
    status: int = 0
    error_type: str | None = None
    response_started: bool = False
    first_byte_at: float | None = None
    upstream_request_id: str | None = None
    metered: bool = True
    meter: MeterResult | None = None
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # x-buzz-ratelimit-*

    @property
    def tags(self) -> tuple[str, ...]:
        return parse_tags(self.headers.get(b"x-buzz-tags"))
