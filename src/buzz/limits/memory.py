"""The in-process limiter of the embedded default: one buzz process, state in dictionaries.

Atomicity comes from the event loop: `reserve` and `settle` never await, so no other request
runs between checking a limit and consuming it. Balances are written through to a
`BalanceStore` on every change, so the embedded default keeps them across restarts; spend
counters live only here, and `restore_spend` lets the caller seed them from the ledger at start.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from buzz.limits.base import (
    CONCURRENCY_RETRY_HINT,
    TOKEN_EPSILON,
    Ask,
    BalanceStore,
    LimitExceeded,
    LimitName,
    Rejection,
    Remaining,
    Reservation,
    Scope,
    ScopeKind,
    ceil_micro,
    seconds_to_next_day,
    seconds_to_next_month,
    utc_day,
    utc_month,
)

ScopeId = tuple[ScopeKind, str]


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float

    def refill(self, capacity: int, now: float) -> float:
        # Clamped to the current capacity, so lowering a limit takes effect at once.
        self.level = min(float(capacity), self.level + (now - self.at) * capacity / 60)
        self.at = now
        return self.level


@dataclass(slots=True)
class _Spend:
    day: int
    today: int
    month: int
    this_month: int

    def roll(self, day: int, month: int) -> _Spend:
        if day != self.day:
            self.day, self.today = day, 0
        if month != self.month:
            self.month, self.this_month = month, 0
        return self


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


class MemoryLimiter:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        balances: BalanceStore | None = None,
    ) -> None:
        self._clock = clock  # buckets: must never jump
        self._wall = wall  # UTC day and month of spend caps
        self._store = balances
        self._buckets: dict[tuple[ScopeKind, str, LimitName], _Bucket] = {}
        self._inflight: dict[ScopeId, int] = {}
        self._spend: dict[ScopeId, _Spend] = {}
        self._balances: dict[str, int] = {}
        self._open: set[str] = set()

    async def reserve(self, scopes: Sequence[Scope], ask: Ask) -> tuple[Reservation, list[Remaining]]:
        now, wall = self._clock(), self._wall()
        day, month = utc_day(wall), utc_month(wall)
        verdict = _Verdict()
        for scope in scopes:
            self._check(scope, ask, now, wall, day, month, verdict)
        rejection = verdict.rejection
        if rejection is not None:
            raise LimitExceeded(rejection)
        remaining: list[Remaining] = []
        for scope in scopes:
            remaining.extend(self._consume(scope, ask, now, wall, day, month))
        reservation = Reservation(uuid.uuid4().hex, tuple(scopes), ask, day, month)
        self._open.add(reservation.id)
        return reservation, remaining

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int, cost_nanos: int) -> None:
        if min(input_tokens, output_tokens, cost_nanos) < 0:
            raise ValueError("usage cannot be negative")
        if not reservation.checked or reservation.id not in self._open:
            return
        self._open.discard(reservation.id)
        now, ask = self._clock(), reservation.ask
        extra_cost = cost_nanos - ask.cost_nanos
        for scope in reservation.scopes:
            limits, sid = scope.limits, (scope.kind, scope.id)
            if limits.concurrency is not None:
                self._inflight[sid] = max(0, self._inflight.get(sid, 0) - 1)
            unused: list[tuple[LimitName, int | None, int]] = [
                ("itpm", limits.itpm, ask.input_tokens - input_tokens),
                ("otpm", limits.otpm, ask.output_tokens - output_tokens),
            ]
            for name, capacity, tokens in unused:
                if capacity is not None and tokens:
                    bucket = self._bucket(scope, name, capacity, now)
                    bucket.level = min(float(capacity), bucket.refill(capacity, now) + tokens)
            spend = self._spend.get(sid)
            if spend is not None:
                # A period that has rolled over since the reserve is gone; its figure no longer matters.
                if spend.day == reservation.day:
                    spend.today += extra_cost
                if spend.month == reservation.month:
                    spend.this_month += extra_cost
            if scope.prepaid and extra_cost:
                self._add(scope.id, -extra_cost)

    async def add_balance(self, project: str, nanos: int) -> int:
        return self._add(project, nanos)

    async def balance(self, project: str) -> int:
        return self._balance(project)

    async def spend(self, scope: Scope) -> tuple[int, int]:
        wall = self._wall()
        spend = self._spend_of((scope.kind, scope.id), utc_day(wall), utc_month(wall))
        return spend.today, spend.this_month

    def forget_balances(self) -> None:
        """Reread balances from the store on next use: an operator changed one from outside."""
        self._balances.clear()

    def restore_spend(self, kind: ScopeKind, scope_id: str, today: int, this_month: int) -> None:
        """Seed a scope's spend of the current day and month, e.g. from the ledger at start-up."""
        wall = self._wall()
        self._spend[(kind, scope_id)] = _Spend(utc_day(wall), today, utc_month(wall), this_month)

    async def close(self) -> None:
        return None

    def _check(self, scope: Scope, ask: Ask, now: float, wall: float, day: int, month: int, verdict: _Verdict) -> None:
        limits, sid = scope.limits, (scope.kind, scope.id)
        for name, capacity, need in _buckets_of(scope, ask):
            if need > capacity:
                verdict.short(scope, name, None)
                continue
            level = self._bucket(scope, name, capacity, now).refill(capacity, now)
            if level + TOKEN_EPSILON < need:
                # A zero limit never refills; anything else refills at capacity/60 per second.
                wait = None if capacity == 0 else ceil_micro((need - level) * 60 / capacity)
                verdict.short(scope, name, wait)
        if limits.concurrency is not None and self._inflight.get(sid, 0) >= limits.concurrency:
            verdict.short(scope, "concurrency", CONCURRENCY_RETRY_HINT if limits.concurrency > 0 else None)
        if scope.prepaid and self._balance(scope.id) - ask.cost_nanos < 0:
            verdict.short(scope, "balance", None)
        for name, cap, spent, wait in _caps_of(scope, self._spend_of(sid, day, month), wall):
            if spent + ask.cost_nanos > cap:
                verdict.short(scope, name, None if ask.cost_nanos > cap else wait)

    def _consume(self, scope: Scope, ask: Ask, now: float, wall: float, day: int, month: int) -> list[Remaining]:
        limits, sid = scope.limits, (scope.kind, scope.id)
        left: list[Remaining] = []
        for name, capacity, need in _buckets_of(scope, ask):
            bucket = self._bucket(scope, name, capacity, now)
            bucket.level -= need
            reset = (capacity - bucket.level) * 60 / capacity if capacity else 0.0
            left.append(Remaining(scope, name, capacity, math.floor(bucket.level), reset))
        if limits.concurrency is not None:
            inflight = self._inflight[sid] = self._inflight.get(sid, 0) + 1
            left.append(Remaining(scope, "concurrency", limits.concurrency, limits.concurrency - inflight, None))
        spend = self._spend_of(sid, day, month)
        spend.today += ask.cost_nanos
        spend.this_month += ask.cost_nanos
        left.extend(
            Remaining(scope, name, cap, cap - spent, reset) for name, cap, spent, reset in _caps_of(scope, spend, wall)
        )
        if scope.prepaid:
            left.append(Remaining(scope, "balance", None, self._add(scope.id, -ask.cost_nanos), None))
        return left

    def _bucket(self, scope: Scope, name: LimitName, capacity: int, now: float) -> _Bucket:
        key = (scope.kind, scope.id, name)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(capacity), now)
        return bucket

    def _spend_of(self, sid: ScopeId, day: int, month: int) -> _Spend:
        spend = self._spend.get(sid)
        if spend is None:
            spend = self._spend[sid] = _Spend(day, 0, month, 0)
        return spend.roll(day, month)

    def _balance(self, project: str) -> int:
        if project not in self._balances:
            self._balances[project] = self._store.get(project) if self._store is not None else 0
        return self._balances[project]

    def _add(self, project: str, delta: int) -> int:
        self._balances[project] = self._balance(project) + delta
        if self._store is not None:
            self._store.add(project, delta)
        return self._balances[project]


def _buckets_of(scope: Scope, ask: Ask) -> list[tuple[LimitName, int, int]]:
    """(limit, capacity, what this ask takes) for each token bucket the scope has."""
    limits = scope.limits
    wanted: list[tuple[LimitName, int | None, int]] = [
        ("rpm", limits.rpm, 1),
        ("itpm", limits.itpm, ask.input_tokens),
        ("otpm", limits.otpm, ask.output_tokens),
    ]
    return [(name, capacity, need) for name, capacity, need in wanted if capacity is not None]


def _caps_of(scope: Scope, spend: _Spend, wall: float) -> list[tuple[LimitName, int, int, float]]:
    """(limit, cap, spent so far, seconds to the next period) for each spend cap the scope has.

    Monthly comes first: when both are spent, waiting for tomorrow would not help.
    """
    limits = scope.limits
    caps: list[tuple[LimitName, int | None, int, float]] = [
        ("monthly", limits.monthly_nanos, spend.this_month, seconds_to_next_month(wall)),
        ("daily", limits.daily_nanos, spend.today, seconds_to_next_day(wall)),
    ]
    return [(name, cap, spent, reset) for name, cap, spent, reset in caps if cap is not None]
