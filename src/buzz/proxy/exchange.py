"""One request's passage through buzz: what each stage learns, for settle to turn into a row."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from buzz.proxy.auth import Principal
from buzz.upstreams.base import MeterResult

if TYPE_CHECKING:
    from buzz.proxy.batches import ResultLines

# Where the pipeline leaves a request's exchange in its ASGI scope, for the access log to read.
SCOPE_KEY = "buzz.exchange"


def new_request_id() -> str:
    # Time-ordered (milliseconds, 12 hex digits) then random, so ids sort by arrival in the ledger.
    return "req_" + ((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(8)).hex()


class Exchange:
    """What each stage learns about one request; settle turns it into the ledger row.

    A plain class with its own `__init__`: one is made per request, and a dataclass's generated
    one, with default factories and keywords, costs several times as much.
    """

    __slots__ = (
        "body_bytes",
        "bytes_out",
        "credential",
        "error_type",
        "extra_headers",
        "first_byte_at",
        "headers",
        "meter",
        "metered",
        "model",
        "principal",
        "provider",
        "request_id",
        "response_started",
        "results",
        "started",
        "status",
        "surface",
        "tags",
        "ts",
        "unpriced",
        "upstream_request_id",
        "user_id",
    )

    def __init__(self, surface: str, headers: dict[bytes, bytes], metered: bool = True) -> None:
        self.surface = surface
        self.headers = headers  # first value of each request header, for lookups
        self.metered = metered  # False: forwarded but never billed (count_tokens)
        self.unpriced = False  # not metered, yet an answer may have cost money (images, audio)
        # A batch's results being fetched: what they are billed under (the batch, or OpenAI's
        # output file), the batch if known, and what the relay read of them.
        self.results: tuple[str, str | None, ResultLines] | None = None
        self.request_id = new_request_id()
        self.ts = time.time()  # arrival, unix seconds
        self.started = time.perf_counter()
        self.body_bytes = 0
        self.bytes_out = 0  # response body bytes sent to the client, for the access log
        self.principal: Principal | None = None
        self.provider: str | None = None
        self.credential: str | None = None  # the name of the upstream credential it went out with
        self.model: str | None = None
        self.user_id: str | None = None
        self.tags: tuple[str, ...] = ()
        self.status = 0
        self.error_type: str | None = None
        self.response_started = False
        self.first_byte_at: float | None = None
        self.upstream_request_id: str | None = None
        self.meter: MeterResult | None = None
        self.extra_headers: Sequence[tuple[bytes, bytes]] = ()  # x-buzz-ratelimit-*
