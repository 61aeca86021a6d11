"""admit: reserve the request's worst case against its key's and project's limits, then settle.

Reserve before forwarding, settle after (in the request path's `finally`): one request, one
concurrency slot, an input estimate, the output ceiling and the worst-case cost are taken
atomically; what was not used is given back and what was used beyond is charged. A key and
project with no limits skip the limiter entirely, so the default costs nothing.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter
from types import MappingProxyType

from buzz.billing.ledger import LedgerRow
from buzz.billing.pricing import PriceBook
from buzz.billing.usage import Usage
from buzz.changes import rfc3339
from buzz.errors import GatewayError, Kind
from buzz.limits.base import (
    Ask,
    Limiter,
    LimiterUnavailable,
    LimitExceeded,
    LimitName,
    Rejection,
    Remaining,
    Reservation,
    Scope,
)
from buzz.proxy.auth import Principal
from buzz.proxy.route import RequestHead
from buzz.store.base import KeyRecord
from buzz.upstreams.estimate import approximate_tokens

# Without a ceiling in the request, the output a rate limit reserves: enough for most answers,
# and the settlement charges the real figure either way.
DEFAULT_OUTPUT_RESERVE = 4096
# The worst-case output of a model whose context window nobody knows, for spend and balances.
UNKNOWN_CONTEXT_WINDOW = 131_072
_MONEY = ("daily", "monthly", "balance")
# Told, after each reserve that answered, how long it took in seconds and which limit refused the
# request (None: admitted).
ReserveObserver = Callable[[float, LimitName | None], None]
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


def model_allowed(key: KeyRecord | None, model: str) -> bool:
    """Whether the key's model allow-list (glob patterns), if it has one, admits `model`."""
    if key is None or key.allowed_models is None:
        return True
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in key.allowed_models)


def check_access(principal: Principal, model: str | None, now: float) -> None:
    """403s that need no limiter: an expired key, a model outside the key's allow-list (None:
    the request names no model, such as a model list)."""
    key = principal.key
    if key is None:
        return
    if key.expires_at is not None and key.expires_at <= now:
        raise GatewayError(Kind.PERMISSION, f"API key expired at {rfc3339(key.expires_at)}")
    if model is not None and not model_allowed(key, model):
        raise GatewayError(Kind.PERMISSION, f"API key is not allowed to use model {model!r}")


class Admission:
    """Reserves two different things. Rate limits (itpm, otpm) take an estimate: about 4 body
    bytes a token of input, and the output ceiling (or `DEFAULT_OUTPUT_RESERVE`), so a long
    prompt is not refused for tokens it will never use. Money (spend caps, prepaid balances)
    takes a true worst case, so no number of concurrent requests can overspend it: every body
    byte an input token (no tokenizer makes more tokens than bytes of text), and the ceiling
    times the answers asked for (`n`, `candidateCount`), or, with no ceiling, `output_reserve`
    tokens (by default the model's context window)."""

    def __init__(
        self,
        limiter: Limiter,
        prices: PriceBook,
        context_window: Callable[[str], int | None] = lambda model: None,
        output_reserve: int | None = None,
        observer: ReserveObserver | None = None,
    ) -> None:
        self._limiter = limiter
        self._prices = prices
        self._context_window = context_window
        self._output_reserve = output_reserve
        self._observer = observer

    async def reserve(
        self,
        scopes: Sequence[Scope],
        provider: str,
        model: str,
        body: bytes,
        head: RequestHead,
        now: float,
        billed: bool = True,
        room: int = 0,
    ) -> Admitted:
        """`billed` False (count_tokens): the request counts against rpm and concurrency only, and
        its spend caps and balance must have `room` nano-dollars left (a batch about to be made)."""
        choices = head.choices
        unbounded = head.max_output is None
        if head.max_output is None:
            ceiling = self._output_reserve or self._context_window(model) or UNKNOWN_CONTEXT_WINDOW
            rate_output = DEFAULT_OUTPUT_RESERVE * choices
        else:
            ceiling = rate_output = head.max_output
            rate_output *= choices
        worst_output = ceiling * choices
        cost = self._worst_cost(provider, model, body, len(body), worst_output, now)
        ask = Ask(approximate_tokens(len(body)), rate_output, cost) if billed else Ask(0, 0, room)
        observer = self._observer
        started = perf_counter() if observer is not None else 0.0
        try:
            reservation, remaining = await self._limiter.reserve(scopes, ask)
        except LimitExceeded as exceeded:
            if observer is not None:
                observer(perf_counter() - started, exceeded.rejection.limit)
            error = _rejection_error(exceeded.rejection)
            if unbounded and exceeded.rejection.limit in _MONEY:
                error.message += (
                    f"; this request names no output ceiling, so its worst case counts {worst_output} output"
                    " tokens: a max_tokens reserves less"
                )
            error.headers.extend(ratelimit_headers(exceeded.remaining))  # what is left, as on any answer
            raise error from None
        except LimiterUnavailable as exc:
            raise GatewayError(Kind.UNAVAILABLE, "the limits store is unavailable; try again shortly") from exc
        if observer is not None:
            observer(perf_counter() - started, None)
        return Admitted(reservation, remaining)

    async def settle(self, admitted: Admitted, row: LedgerRow | None, charge: int = 0) -> None:
        """Correct the reservation to what the request's ledger row says it used, plus `charge`
        (what it billed on rows of their own: a batch's results). Without a row (its making
        failed), the reserved worst case stays charged: the safe side."""
        if row is None:
            ask = admitted.reservation.ask
            input_tokens, output_tokens, cost = ask.input_tokens, ask.output_tokens, ask.cost_nanos + charge
        else:
            input_tokens = (
                row.input_tokens + row.cache_write_5m_tokens + row.cache_write_1h_tokens + row.cache_read_tokens
            )
            output_tokens = row.output_tokens
            # An unpriced model was reserved at zero cost; charging nothing keeps the two consistent.
            cost = (row.cost_nanos if row.cost_nanos is not None and row.cost_nanos > 0 else 0) + charge
        # Not shielded: a cancellation (shutdown) cannot stop a settlement once it has begun (the
        # in-process one never waits; the Redis one is sent with its batch all the same).
        await self._limiter.settle(admitted.reservation, input_tokens, output_tokens, cost)

    def _worst_cost(self, provider: str, model: str, body: bytes, input_tokens: int, output: int, now: float) -> int:
        # A prompt marked for caching may be written to the cache, at up to 2x input for a 1h TTL.
        if b'"cache_control"' not in body:
            usage = Usage(input_tokens, output)
        elif b'"ttl":"1h"' in body or b'"ttl": "1h"' in body:
            usage = Usage(0, output, cache_write_1h_tokens=input_tokens)
        else:
            usage = Usage(0, output, cache_write_5m_tokens=input_tokens)
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


def _key_headers() -> dict[str, tuple[bytes, bytes | None]]:
    """For each limit of a key, its header names, encoded once: (remaining, reset or None)."""
    names: dict[str, tuple[bytes, bytes | None]] = {}
    for limit in _LIMIT_TEXT:
        prefix = f"x-buzz-ratelimit-key-{limit}"
        refills = limit in ("rpm", "itpm", "otpm")
        names[limit] = (f"{prefix}-remaining".encode(), f"{prefix}-reset".encode() if refills else None)
    return names


_KEY_HEADERS = MappingProxyType(_key_headers())
_BALANCE_HEADER = b"x-buzz-ratelimit-project-balance-remaining"


def ratelimit_headers(remaining: list[Remaining]) -> list[tuple[bytes, bytes]]:
    """What changes with every request: how much of each of the key's limits is left
    (`x-buzz-ratelimit-key-<limit>-remaining`), when each rate limit is whole again
    (`...-reset`, in seconds), and the project's prepaid balance.

    What does not change from one request to the next is not repeated on every response: the
    configured limits (the operator set them; a rejection names the one hit) and when a spend
    period ends (the next UTC midnight, or the first of the month). The project's other limits
    are the operator's business. Every header costs time on every response.
    """
    headers = []
    for scope, limit, _, left, reset in remaining:
        if scope.kind == "key":
            remaining_name, reset_name = _KEY_HEADERS[limit]
            headers.append((remaining_name, b"%d" % left))
            if reset_name is not None and reset is not None:
                headers.append((reset_name, b"%d" % math.ceil(reset)))
        elif limit == "balance":
            headers.append((_BALANCE_HEADER, b"%d" % left))
    return headers
