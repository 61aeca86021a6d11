"""Admission control: what a request may take, and the Protocol both limiter backends implement.

A request is admitted by *reserving* its worst case against every scope it is charged to (its
key and its project) in one atomic step, and *settled* afterwards with what it really used.
Reserving the worst case before forwarding is what keeps budgets exact under concurrency: there
is no window between "check" and "charge" for a hundred simultaneous requests to slip through.

Which limit a rejection names, when several are short at once, is chosen so that its
`retry_after` is honest: a limit that no waiting can satisfy wins (retry_after None), otherwise
the one whose capacity returns last (so a retry at that moment passes every limit that can be
predicted), and concurrency only when nothing else is short, since when a slot frees up depends
on other requests.

What each `retry_after` promises. For a rate or a spend cap it is exact, rounded up to the
microsecond: at that moment the capacity the request asked for is back (unless another request
takes it first), and a moment earlier it is not. For concurrency nothing can be promised: a
slot frees the moment one of the scope's requests in flight ends, which nobody knows in
advance, and a live request may hold its slot for as long as it streams. So a concurrency
rejection carries `CONCURRENCY_RETRY_HINT`: a polling interval, not a prediction. What the
limiters do promise is that a slot never outlives its request by much: the in-process limiter
frees it at settlement, which cannot fail; the Redis limiter holds it as a lease that its
process renews while the request is in flight, so a slot whose request has ended (its process
died, or its settlement was lost in an outage) is free again within one lease.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Protocol

LimitName = Literal["rpm", "itpm", "otpm", "concurrency", "daily", "monthly", "balance"]
ScopeKind = Literal["key", "project"]

# A full slot frees up when some other request ends, which nobody can predict (see above):
# clients still need a Retry-After, and a second is short enough not to waste a slot that frees
# up early. It is how often to ask again, not when a slot will be free.
CONCURRENCY_RETRY_HINT = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """One scope's limits; None means unlimited."""

    rpm: int | None = None  # requests per minute
    itpm: int | None = None  # input tokens per minute
    otpm: int | None = None  # output tokens per minute
    concurrency: int | None = None  # requests in flight
    daily_nanos: int | None = None  # spend per UTC day, nano-dollars
    monthly_nanos: int | None = None  # spend per UTC calendar month, nano-dollars


@dataclass(frozen=True, slots=True)
class Scope:
    """What a request is charged against: its key, and its project."""

    kind: ScopeKind
    id: str
    limits: Limits = field(default_factory=Limits)
    prepaid: bool = False  # projects only: every request draws down the project's balance

    def __post_init__(self) -> None:
        if self.prepaid and self.kind != "project":
            raise ValueError("only a project has a prepaid balance")

    @property
    def reported(self) -> bool:
        """Whether a reserve reports every limit of this scope (see `Remaining`), not only a balance."""
        return self.kind == "key"


class Ask(NamedTuple):
    """The worst case a request may consume, reserved before it is forwarded; never negative.

    A NamedTuple, not a frozen dataclass: one is made on every limited request.
    """

    input_tokens: int
    output_tokens: int  # max_tokens
    cost_nanos: int  # worst-case cost


@dataclass(frozen=True, slots=True)
class Rejection:
    """Which limit turned a request away, and when to try again.

    `retry_after` is in seconds (fractional: the HTTP layer rounds up). None means waiting will
    not help: the ask exceeds the limit itself, or the prepaid balance is exhausted. For a rate
    or a spend cap it is exact; for concurrency it is `CONCURRENCY_RETRY_HINT` (see above).
    """

    scope: Scope
    limit: LimitName
    retry_after: float | None


# One scope's headroom on one limit after a reservation (or at a rejection), for the
# `x-buzz-ratelimit-*` headers: (scope, limit, capacity, remaining, reset). `capacity` is the
# configured limit (None for a balance, which has no ceiling); `remaining` of a bucket is whole
# tokens, rounded down; `reset` is seconds until the limit is whole again (a bucket full, to the
# microsecond rounded up; a spend period over), or None. A reserve reports what the headers
# show: every limit of a key, and a project's balance (a project's other limits are the
# operator's business, and reporting them cost Redis a third of its time per request). A bare
# tuple: a reserve makes several on every request, and a NamedTuple costs ten times as much.
Remaining = tuple[Scope, LimitName, int | None, int, float | None]


class LimitExceeded(Exception):
    """A reserve turned away: which limit, and what every limit had left (nothing was taken)."""

    def __init__(self, rejection: Rejection, remaining: Sequence[Remaining] = ()) -> None:
        super().__init__(f"{rejection.scope.kind} {rejection.limit} limit exceeded")
        self.rejection = rejection
        self.remaining = list(remaining)


class LimiterUnavailable(Exception):
    """The limiter's state cannot be reached: the gateway answers 503, never a guess."""


@dataclass(slots=True)
class Reservation:
    """A handle on what `reserve` took, so `settle` can give back exactly that.

    The scopes are kept as they were at reserve time: if an operator changes a limit while the
    request is in flight, settlement still corrects the buckets it actually drew from.
    """

    id: str
    scopes: tuple[Scope, ...]
    ask: Ask
    day: int  # UTC days since the epoch when the spend was counted
    month: int  # UTC year * 12 + month - 1
    checked: bool = True  # False: admitted without a limiter (fail-open), nothing to settle
    handle: Any = None  # the backend's own reference to what it reserved, if it keeps one
    settled: bool = False  # set by a backend that tells a second settle by the reservation itself


class BalanceStore(Protocol):
    """Where the in-process limiter persists prepaid balances (SQLite in the embedded default).

    Called synchronously on the event loop, so an implementation must be fast (a local write).
    """

    def get(self, project: str) -> int: ...

    def add(self, project: str, delta: int) -> None: ...


class Limiter(Protocol):
    # True when the state lives in this process: reserve and settle then never wait.
    in_process: bool

    async def reserve(self, scopes: Sequence[Scope], ask: Ask) -> tuple[Reservation, list[Remaining]]:
        """Take the ask from every limit of every scope, all or nothing; raise LimitExceeded if any is short."""
        ...

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int, cost_nanos: int) -> None:
        """Free the concurrency slot and correct buckets, spend and balance to what was used.

        Usage above the ask is charged in full, even below zero: the request already happened.
        A second settle of the same reservation does nothing.

        Raises ValueError for negative usage, and nothing for an unreachable store: the
        in-process limiter cannot lose its state, and the Redis one keeps a settlement it could
        not deliver and retries it in the background. A cancelled caller does not stop it: the
        Redis one's settlement goes with its batch all the same. Any other exception is a fault
        in buzz.
        """
        ...

    async def add_balance(self, project: str, nanos: int) -> int: ...

    async def balance(self, project: str) -> int: ...

    async def spend(self, scope: Scope) -> tuple[int, int]:
        """Spend of the current UTC day and month, nano-dollars."""
        ...

    async def headroom(self, scope: Scope) -> list[Remaining]:
        """What each limit `scope.limits` sets has left now, taking nothing and changing nothing:
        rpm, itpm, otpm, concurrency, daily, monthly, then the balance of a prepaid project, in
        that order, with the figures a reserve would report (a limit changed since the scope's
        last request is read as the next reserve would apply it). For people, not admission:
        another request may take what it shows a moment later."""
        ...

    async def ping(self) -> None:
        """Raises LimiterUnavailable when the limiter's state cannot be reached (readiness)."""
        ...

    async def close(self) -> None: ...


# UTC calendar arithmetic, shared by the in-process backend and the tests; the Redis scripts
# do the same sums in Lua against Redis's clock.


def utc_day(wall: float) -> int:
    return int(wall // 86400)


def utc_month(wall: float) -> int:
    moment = datetime.fromtimestamp(wall, UTC)
    return moment.year * 12 + moment.month - 1


def seconds_to_next_day(wall: float) -> float:
    return (utc_day(wall) + 1) * 86400 - wall


def next_month_start(wall: float) -> int:
    """The first second of the UTC month after the one `wall` is in."""
    year, month0 = divmod(utc_month(wall) + 1, 12)
    return calendar.timegm((year, month0 + 1, 1, 0, 0, 0))


def seconds_to_next_month(wall: float) -> float:
    return next_month_start(wall) - wall
