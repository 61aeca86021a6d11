"""admit: reserve the request's worst case against its key's and project's limits, then settle.

Reserve before forwarding, settle after (in the request path's `finally`): one request, one
concurrency slot, an input estimate, the output ceiling and the worst-case cost are taken
atomically; what was not used is given back and what was used beyond is charged. A key and
project with no limits skip the limiter entirely, so the default costs nothing.
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from buzz.billing.pricing import PriceBook
from buzz.billing.usage import Usage
from buzz.errors import GatewayError, Kind
from buzz.limits.base import (
    Ask,
    Limiter,
    LimiterUnavailable,
    LimitExceeded,
    Rejection,
    Remaining,
    Reservation,
    Scope,
)
from buzz.proxy.auth import Principal
from buzz.upstreams.estimate import approximate_tokens

# Without a ceiling in the request, the output reserved: enough for most answers, and the
# settlement charges the real figure either way.
DEFAULT_OUTPUT_RESERVE = 4096
_LIMIT_TEXT = {
    "rpm": "requests per minute",
    "itpm": "input tokens per minute",
    "otpm": "output tokens per minute",
    "concurrency": "concurrent requests",
    "daily": "daily spend",
    "monthly": "monthly spend",
    "balance": "prepaid balance",
}


@dataclass(slots=True)
class Admitted:
    reservation: Reservation
    remaining: list[Remaining]


def check_access(principal: Principal, model: str, now: float) -> None:
    """403s that need no limiter: an expired key, a model outside the key's allow-list."""
    key = principal.key
    if key is None:
        return
    if key.expires_at is not None and datetime.fromisoformat(key.expires_at).timestamp() <= now:
        raise GatewayError(Kind.PERMISSION, f"API key expired at {key.expires_at}")
    if key.allowed_models is not None and not any(
        fnmatch.fnmatchcase(model, pattern) for pattern in key.allowed_models
    ):
        raise GatewayError(Kind.PERMISSION, f"API key is not allowed to use model {model!r}")


class Admission:
    def __init__(self, limiter: Limiter, prices: PriceBook) -> None:
        self._limiter = limiter
        self._prices = prices

    async def reserve(
        self, scopes: Sequence[Scope], provider: str, model: str, body: bytes, max_output: int | None, now: float
    ) -> Admitted:
        input_tokens = approximate_tokens(len(body))
        output_tokens = DEFAULT_OUTPUT_RESERVE if max_output is None else max_output
        ask = Ask(
            input_tokens, output_tokens, self._worst_cost(provider, model, body, input_tokens, output_tokens, now)
        )
        try:
            reservation, remaining = await self._limiter.reserve(scopes, ask)
        except LimitExceeded as exceeded:
            raise _rejection_error(exceeded.rejection) from None
        except LimiterUnavailable as exc:
            raise GatewayError(Kind.UNAVAILABLE, "the limits store is unavailable; try again shortly") from exc
        return Admitted(reservation, remaining)

    async def settle(self, admitted: Admitted, usage: Usage, cost_nanos: int | None) -> None:
        # An unpriced model was reserved at zero cost; charging nothing keeps the two consistent.
        settling = self._limiter.settle(
            admitted.reservation, usage.total_input_tokens, usage.output_tokens, max(0, cost_nanos or 0)
        )
        if self._limiter.in_process:
            # It never waits, so no cancellation can come between it and its end: a shield
            # (a task of its own, on every request) would buy nothing.
            await settling
        else:
            # Shielded: a reservation must be settled even if shutdown cancels this request.
            await asyncio.shield(settling)

    def _worst_cost(self, provider: str, model: str, body: bytes, input_tokens: int, output: int, now: float) -> int:
        # A prompt marked for caching may be written to the cache, at up to 2x input for a 1h TTL.
        if b'"cache_control"' in body:
            one_hour = b'"ttl":"1h"' in body or b'"ttl": "1h"' in body
            usage = Usage(output_tokens=output)
            if one_hour:
                usage.cache_write_1h_tokens = input_tokens
            else:
                usage.cache_write_5m_tokens = input_tokens
        else:
            usage = Usage(input_tokens=input_tokens, output_tokens=output)
        return self._prices.buzz_nanos(provider, model, usage, now) or 0


def _rejection_error(rejection: Rejection) -> GatewayError:
    what = f"{rejection.scope.kind} {_LIMIT_TEXT[rejection.limit]} limit"
    headers: list[tuple[bytes, bytes]]
    if rejection.limit in ("daily", "monthly", "balance"):
        # Money: retrying soon will not help, and SDKs must not loop on it.
        kind, headers = Kind.BILLING, []
        message = f"{what} reached" if rejection.limit != "balance" else f"{what} exhausted: add funds"
    else:
        kind, message = Kind.RATE_LIMIT, f"{what} reached"
        headers = []
    if rejection.retry_after is not None:
        seconds = max(1, math.ceil(rejection.retry_after))
        headers.append((b"retry-after", str(seconds).encode()))
        message += f"; capacity returns in {seconds} s"
    elif kind is Kind.RATE_LIMIT:
        message += "; this request is larger than the limit itself"
    return GatewayError(kind, message, headers)


def _header_names() -> dict[tuple[str, str], tuple[bytes, bytes, bytes]]:
    """Every header name, encoded once: (limit, remaining, reset) per scope kind and limit."""
    names = {}
    for kind in ("key", "project"):
        for limit in _LIMIT_TEXT:
            prefix = f"x-buzz-ratelimit-{kind}-{limit}"
            names[kind, limit] = (
                f"{prefix}-limit".encode(),
                f"{prefix}-remaining".encode(),
                f"{prefix}-reset".encode(),
            )
    return names


_HEADER_NAMES = MappingProxyType(_header_names())


def ratelimit_headers(remaining: list[Remaining]) -> list[tuple[bytes, bytes]]:
    """`x-buzz-ratelimit-key-<limit>-{limit,remaining,reset}`: the key's own headroom, and the
    project's prepaid balance. The project's other limits are the operator's business, and every
    header costs time on every response."""
    headers = []
    for scope, limit, capacity, left, reset in remaining:
        if scope.kind == "project" and limit != "balance":
            continue
        limit_name, remaining_name, reset_name = _HEADER_NAMES[scope.kind, limit]
        if capacity is not None:
            headers.append((limit_name, b"%d" % capacity))
        headers.append((remaining_name, b"%d" % left))
        if reset is not None:
            headers.append((reset_name, b"%d" % math.ceil(reset)))
    return headers
