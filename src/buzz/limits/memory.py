"""The in-process limiter of the embedded default: one buzz process, state in dictionaries.

Atomicity comes from the event loop: `reserve` and `settle` never await, so no other request
runs between checking a limit and consuming it. Balances are written through to a
`BalanceStore` on every change, so the embedded default keeps them across restarts; spend
counters live only here, and `restore_spend` lets the caller seed them from the ledger at start.

This runs twice on every request of a limited key, so it is written for the hot path: each
scope's figures live in one `_State` found with one lookup, a token bucket is one integer with
no refill to compute, and the UTC day and month are worked out again only when the day ends.

Bucket arithmetic is exact: time is integer nanoseconds of a monotonic clock, and each bucket
counts in units small enough that both a nanosecond and a token are whole numbers of them.
Floating point would lose precision as the clock grows (a machine up for months reads
~10^7 s), and a header or a rejection would then be off by a token.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from fractions import Fraction

from buzz.limits.base import (
    CONCURRENCY_RETRY_HINT,
    Ask,
    BalanceStore,
    LimitExceeded,
    LimitName,
    Limits,
    Rejection,
    Remaining,
    Reservation,
    Scope,
    ScopeKind,
    next_month_start,
    utc_day,
    utc_month,
)

ScopeId = tuple[ScopeKind, str]
_BUCKETS: tuple[LimitName, LimitName, LimitName] = ("rpm", "itpm", "otpm")
_MINUTE_NS = 60_000_000_000  # a bucket refills its whole capacity in a minute


class _Periods:
    """The UTC day and month of the wall clock, recomputed only when the day changes."""

    __slots__ = ("day", "day_end", "day_start", "month", "month_end")

    def __init__(self) -> None:
        self.day = self.month = 0
        self.day_start = self.day_end = self.month_end = 0.0

    def update(self, wall: float) -> None:
        if self.day_start <= wall < self.day_end:
            return
        self.day = utc_day(wall)
        self.day_start = self.day * 86400.0
        self.day_end = self.day_start + 86400.0
        self.month = utc_month(wall)
        self.month_end = float(next_month_start(wall))


class _Bucket:
    """One token bucket, kept as the moment it will be full again (GCRA's "theoretical arrival
    time"): one integer instead of a level and a timestamp. Taking tokens moves it later, giving
    them back moves it earlier, and no refill needs computing in between.

    The moment is counted in units of which a nanosecond is `rate` and a token is `token`: a
    bucket of capacity C refills C tokens in 60e9 ns, so with g = gcd(60e9, C), rate = C / g
    and token = 60e9 / g are both whole, and so is every sum below. (A token alone is 60e9 / C
    ns, rarely a whole number.)"""

    __slots__ = ("at", "capacity", "full_at", "index", "micro", "name", "rate", "span", "token")

    def __init__(self, index: int, capacity: int, deficit: Fraction, now: int) -> None:
        self.index = index  # into (rpm, itpm, otpm) and into what an ask takes of each
        self.name = _BUCKETS[index]
        self.capacity = capacity
        g = math.gcd(_MINUTE_NS, capacity)  # capacity 0: g is 60e9, and the bucket never refills
        self.rate = capacity // g  # units a nanosecond
        self.token = _MINUTE_NS // g  # units a token
        self.span = capacity * self.token  # units from empty to full: a minute
        self.micro = self.rate * 1000  # units a microsecond
        # `deficit` is how many tokens short of full it starts; a fraction rounds up (the safe side).
        self.at = now * self.rate  # the moment of the reserve under way, in these units
        self.full_at = self.at + math.ceil(deficit * self.token)

    def deficit(self, now: int) -> Fraction:
        """Tokens short of full at `now`, exactly (for a change of limits, off the hot path)."""
        return Fraction(max(0, self.full_at - now * self.rate), self.token)


def _retuned(buckets: tuple[_Bucket, ...], limits: Limits, now: int) -> tuple[_Bucket, ...]:
    """The buckets of new limits: a bucket that has just been given a limit starts full, what
    was left of one stays, and a lowered limit applies at once (a level above the new capacity
    is cut to it). The old buckets are left as they were."""
    before = {bucket.index: (bucket.capacity, bucket.deficit(now)) for bucket in buckets}
    made = []
    for i, cap in enumerate((limits.rpm, limits.itpm, limits.otpm)):
        if cap is None:
            continue
        deficit = Fraction(0)
        if i in before:
            old_cap, old_deficit = before[i]
            # The level (old_cap - old_deficit) stays, cut to the new capacity.
            deficit = max(deficit, old_deficit + cap - old_cap)
        made.append(_Bucket(i, cap, deficit, now))
    return tuple(made)


class _State:
    """One scope's live figures: its token buckets, requests in flight, spend so far."""

    __slots__ = ("buckets", "day", "inflight", "limits", "month", "this_month", "today")

    def __init__(self, day: int, month: int) -> None:
        self.limits: Limits | None = None  # the limits `buckets` were made for
        self.buckets: tuple[_Bucket, ...] = ()  # only the limits that are set
        self.inflight = 0
        self.day, self.today, self.month, self.this_month = day, 0, month, 0

    def retune(self, limits: Limits, now: int) -> None:
        """Adopt new limits (see `_retuned`)."""
        self.buckets = _retuned(self.buckets, limits, now)
        self.limits = limits

    def roll(self, day: int, month: int) -> None:
        if day != self.day:
            self.day, self.today = day, 0
        if month != self.month:
            self.month, self.this_month = month, 0


class _Verdict:
    """Collects every short limit of one reserve and names the binding one (see base)."""

    __slots__ = ("busy", "latest", "never")

    def __init__(self) -> None:
        self.never: Rejection | None = None
        self.latest: Rejection | None = None
        self.busy: Rejection | None = None

    def short(self, scope: Scope, limit: LimitName, retry_after: float | None) -> None:
        if retry_after is None:
            self.never = self.never or Rejection(scope, limit, None)
        elif limit == "concurrency":
            self.busy = self.busy or Rejection(scope, limit, retry_after)
        elif self.latest is None or retry_after > (self.latest.retry_after or 0.0):
            self.latest = Rejection(scope, limit, retry_after)

    @property
    def rejection(self) -> Rejection | None:
        return self.never or self.latest or self.busy


def _short(verdict: _Verdict | None, scope: Scope, limit: LimitName, retry_after: float | None) -> _Verdict:
    """Records a short limit, making the verdict on the first: a request that fits makes none."""
    verdict = verdict or _Verdict()
    verdict.short(scope, limit, retry_after)
    return verdict


def _left(scope: Scope, bucket: _Bucket, deficit: int, left: list[Remaining]) -> None:
    """Appends a bucket's headroom, `deficit` units short of full: whole tokens left (rounded
    down), and the time until full, rounded up to the microsecond."""
    cap = bucket.capacity
    if deficit <= 0 or not cap:
        left.append((scope, bucket.name, cap, cap, 0.0))
    else:
        left.append((scope, bucket.name, cap, cap + (-deficit // bucket.token), -(-deficit // bucket.micro) / 1e6))


class MemoryLimiter:
    in_process = True

    def __init__(
        self,
        clock: Callable[[], int] = time.monotonic_ns,
        wall: Callable[[], float] = time.time,
        balances: BalanceStore | None = None,
    ) -> None:
        self._clock = clock  # buckets, integer nanoseconds: must never jump
        self._wall = wall  # UTC day and month of spend caps
        self._store = balances
        self._states: dict[ScopeId, _State] = {}
        self._balances: dict[str, int] = {}
        self._periods = _Periods()
        self._ids = itertools.count(1)

    async def reserve(self, scopes: Sequence[Scope], ask: Ask) -> tuple[Reservation, list[Remaining]]:
        now, wall = self._clock(), self._wall()
        periods = self._periods
        periods.update(wall)
        needs = (1, ask.input_tokens, ask.output_tokens)
        states = [self._state(scope, now) for scope in scopes]
        verdict: _Verdict | None = None
        for scope, state in zip(scopes, states):  # noqa: B905 - one state per scope, just made
            verdict = self._check(scope, state, ask, needs, now, wall, verdict)
        if verdict is not None and (rejection := verdict.rejection) is not None:
            headroom: list[Remaining] = []
            for scope, state in zip(scopes, states):  # noqa: B905
                self._report(scope, state, wall, headroom)
            raise LimitExceeded(rejection, headroom)
        remaining: list[Remaining] = []
        for scope, state in zip(scopes, states):  # noqa: B905
            self._consume(scope, state, ask, needs, wall, remaining)
        reservation = Reservation(str(next(self._ids)), tuple(scopes), ask, periods.day, periods.month, True, states)
        return reservation, remaining

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int, cost_nanos: int) -> None:
        if input_tokens < 0 or output_tokens < 0 or cost_nanos < 0:
            raise ValueError("usage cannot be negative")
        if reservation.settled or not reservation.checked:
            return
        reservation.settled = True
        now, ask = self._clock(), reservation.ask
        extra_cost = cost_nanos - ask.cost_nanos
        unused = (0, ask.input_tokens - input_tokens, ask.output_tokens - output_tokens)
        states: list[_State] = reservation.handle
        for scope, state in zip(reservation.scopes, states):  # noqa: B905 - made together in reserve
            reserved = scope.limits
            if reserved.concurrency is not None and state.inflight > 0:
                state.inflight -= 1
            if unused[1] or unused[2]:
                # Correct the buckets the reservation drew from, as they are configured now.
                drawn = None if reserved is state.limits else (reserved.rpm, reserved.itpm, reserved.otpm)
                for bucket in state.buckets:
                    tokens = unused[bucket.index]
                    if not tokens or (drawn is not None and drawn[bucket.index] is None):
                        continue
                    if tokens > 0:  # given back: the bucket is full that much sooner
                        bucket.full_at -= tokens * bucket.token
                    else:  # used beyond the ask: charged like any other take
                        at = now * bucket.rate
                        full_at = bucket.full_at
                        bucket.full_at = (full_at if full_at > at else at) - tokens * bucket.token
            # A period that has rolled over since the reserve is gone; its figure no longer matters.
            if state.day == reservation.day:
                state.today += extra_cost
            if state.month == reservation.month:
                state.this_month += extra_cost
            if scope.prepaid and extra_cost:
                self._add(scope.id, -extra_cost)

    async def add_balance(self, project: str, nanos: int) -> int:
        return self._add(project, nanos)

    async def balance(self, project: str) -> int:
        return self._balance(project)

    async def spend(self, scope: Scope) -> tuple[int, int]:
        self._periods.update(self._wall())
        state = self._states.get((scope.kind, scope.id))
        if state is None:
            return 0, 0
        state.roll(self._periods.day, self._periods.month)
        return state.today, state.this_month

    async def headroom(self, scope: Scope) -> list[Remaining]:
        now, wall = self._clock(), self._wall()
        periods = self._periods
        periods.update(wall)  # the calendar's cache, not the scope's figures
        state = self._states.get((scope.kind, scope.id))
        limits = scope.limits
        buckets: tuple[_Bucket, ...] = ()
        inflight = today = this_month = 0
        if state is not None:
            # Limits changed since the scope's last request are read as its next reserve will
            # apply them, on buckets made for the purpose: the scope's own stay as they are.
            buckets = state.buckets if state.limits == limits else _retuned(state.buckets, limits, now)
            inflight = state.inflight
            today = state.today if state.day == periods.day else 0
            this_month = state.this_month if state.month == periods.month else 0
        left: list[Remaining] = []
        made = {bucket.index: bucket for bucket in buckets}
        for index, cap in enumerate((limits.rpm, limits.itpm, limits.otpm)):
            if cap is None:
                continue
            bucket = made.get(index)
            if bucket is None:  # never used: full
                left.append((scope, _BUCKETS[index], cap, cap, 0.0))
            else:
                _left(scope, bucket, bucket.full_at - now * bucket.rate, left)
        if limits.concurrency is not None:
            left.append((scope, "concurrency", limits.concurrency, limits.concurrency - inflight, None))
        if limits.daily_nanos is not None:
            left.append((scope, "daily", limits.daily_nanos, limits.daily_nanos - today, periods.day_end - wall))
        if limits.monthly_nanos is not None:
            cap = limits.monthly_nanos
            left.append((scope, "monthly", cap, cap - this_month, periods.month_end - wall))
        if scope.prepaid:
            left.append((scope, "balance", None, self._balance(scope.id), None))
        return left

    def forget_balances(self) -> None:
        """Reread balances from the store on next use: an operator changed one from outside."""
        self._balances.clear()

    def restore_spend(self, kind: ScopeKind, scope_id: str, today: int, this_month: int) -> None:
        """Seed a scope's spend of the current day and month, e.g. from the ledger at start-up."""
        self._periods.update(self._wall())
        periods = self._periods
        state = self._states.setdefault((kind, scope_id), _State(periods.day, periods.month))
        state.roll(periods.day, periods.month)
        state.today, state.this_month = today, this_month

    async def ping(self) -> None:
        return  # its state is this process's memory

    async def close(self) -> None:
        return None

    def _state(self, scope: Scope, now: int) -> _State:
        """The scope's figures, rolled over to the current day and month, under its limits."""
        periods = self._periods
        state = self._states.get((scope.kind, scope.id))
        if state is None:
            state = self._states[(scope.kind, scope.id)] = _State(periods.day, periods.month)
        elif state.day != periods.day or state.month != periods.month:
            state.roll(periods.day, periods.month)
        if scope.limits is not state.limits:
            state.retune(scope.limits, now)
        return state

    def _check(
        self,
        scope: Scope,
        state: _State,
        ask: Ask,
        needs: tuple[int, int, int],
        now: int,
        wall: float,
        verdict: _Verdict | None,
    ) -> _Verdict | None:
        """Adds the scope's short limits to `verdict` (made on the first one); all fit: unchanged."""
        limits = scope.limits
        for bucket in state.buckets:
            # Now in the bucket's units, kept for the take and the report that follow.
            at = bucket.at = now * bucket.rate
            need = needs[bucket.index]
            if need > bucket.capacity:
                verdict = _short(verdict, scope, bucket.name, None)
                continue
            # How long until the bucket holds `need`. A full one (full_at <= at) holds its
            # capacity, which is `need` or more.
            full_at = bucket.full_at
            if full_at > at and (wait := full_at - at + need * bucket.token - bucket.span) > 0:
                # Rounded up to the microsecond: a retry at the advertised moment is never early.
                micro = bucket.micro
                verdict = _short(verdict, scope, bucket.name, -(-wait // micro) / 1e6 if micro else None)
        if limits.concurrency is not None and state.inflight >= limits.concurrency:
            verdict = _short(verdict, scope, "concurrency", CONCURRENCY_RETRY_HINT if limits.concurrency > 0 else None)
        cost = ask.cost_nanos
        if scope.prepaid and self._balance(scope.id) - cost < 0:
            verdict = _short(verdict, scope, "balance", None)
        # Monthly first: when both are spent, waiting for tomorrow would not help.
        periods = self._periods
        if limits.monthly_nanos is not None and state.this_month + cost > limits.monthly_nanos:
            verdict = _short(
                verdict, scope, "monthly", None if cost > limits.monthly_nanos else periods.month_end - wall
            )
        if limits.daily_nanos is not None and state.today + cost > limits.daily_nanos:
            verdict = _short(verdict, scope, "daily", None if cost > limits.daily_nanos else periods.day_end - wall)
        return verdict

    def _consume(
        self,
        scope: Scope,
        state: _State,
        ask: Ask,
        needs: tuple[int, int, int],
        wall: float,
        left: list[Remaining],
    ) -> None:
        """Takes the ask (already checked to fit) and appends the scope's headroom to `left`."""
        reported = scope.reported
        for bucket in state.buckets:
            at, full_at = bucket.at, bucket.full_at
            if full_at < at:
                full_at = at
            bucket.full_at = full_at = full_at + needs[bucket.index] * bucket.token
            if not reported:
                continue
            # As `_left` does, inline: this runs for every bucket of every admitted request.
            deficit, cap = full_at - at, bucket.capacity
            if deficit <= 0 or not cap:
                left.append((scope, bucket.name, cap, cap, 0.0))
            else:
                reset = -(-deficit // bucket.micro) / 1e6
                left.append((scope, bucket.name, cap, cap + (-deficit // bucket.token), reset))
        if scope.limits.concurrency is not None:
            state.inflight += 1
        cost = ask.cost_nanos
        state.today += cost
        state.this_month += cost
        if scope.prepaid:
            self._add(scope.id, -cost)
        self._report_rest(scope, state, wall, left)

    def _report(self, scope: Scope, state: _State, wall: float, left: list[Remaining]) -> None:
        """Appends the scope's headroom as it stands to `left`, with a rejection (`_check` ran)."""
        if scope.reported:
            for bucket in state.buckets:
                _left(scope, bucket, bucket.full_at - bucket.at, left)
        self._report_rest(scope, state, wall, left)

    def _report_rest(self, scope: Scope, state: _State, wall: float, left: list[Remaining]) -> None:
        """Appends the headroom of the scope's limits other than its buckets."""
        if not scope.reported:
            if scope.prepaid:
                left.append((scope, "balance", None, self._balance(scope.id), None))
            return
        limits = scope.limits
        if limits.concurrency is not None:
            left.append((scope, "concurrency", limits.concurrency, limits.concurrency - state.inflight, None))
        periods = self._periods
        if limits.monthly_nanos is not None:
            cap = limits.monthly_nanos
            left.append((scope, "monthly", cap, cap - state.this_month, periods.month_end - wall))
        if limits.daily_nanos is not None:
            cap = limits.daily_nanos
            left.append((scope, "daily", cap, cap - state.today, periods.day_end - wall))
        if scope.prepaid:
            left.append((scope, "balance", None, self._balance(scope.id), None))

    def _balance(self, project: str) -> int:
        balance = self._balances.get(project)
        if balance is None:
            balance = self._balances[project] = self._store.get(project) if self._store is not None else 0
        return balance

    def _add(self, project: str, delta: int) -> int:
        balance = self._balances[project] = self._balance(project) + delta
        if self._store is not None:
            self._store.add(project, delta)
        return balance
