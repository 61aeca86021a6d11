"""The scaled-out limiter: N buzz processes enforce one set of limits through one Redis.

A `reserve` is a Lua script that checks and consumes every limit of every scope in a single
atomic step, on Redis's clock, and a `settle` is another; nothing is read into a local copy and
decided on here. Each call carries every request that came while the previous one was in flight
(`batches`), and the script takes them in order, as if one by one. The scripts need Redis 7.0 or
later (`PEXPIRE … GT`). Buckets, concurrency and spend keys carry TTLs, so idle
scopes cost nothing; balances have none: here they are the money.

Both scripts are safe to retry after a lost reply (a marker key records that a reservation
went through, and settling deletes it), which is why the client retries connection errors, and
why a settlement Redis did not take can be queued and sent again (`redis_upkeep`). Concurrency
slots are short leases, renewed while their requests are in flight (`redis_upkeep` too).

Keys are `<prefix><kind>:<id>:<suffix>` and the scripts build some of them from Redis's clock,
so this needs a single Redis (or a prefix with a hash tag on a cluster). The suffixes: `bx`, the
token buckets (a hash); `cx`, the concurrency leases (a sorted set, scored by when each ends, in
microseconds); `d:<day>` and `m:<month>`, spend; `bal`, a prepaid balance. Buckets and leases were
once kept as float seconds under `b` and `c`: with new names, processes of the two versions side
by side during an upgrade each keep their own figures rather than misread the other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any, cast

from buzz.counters import Counters
from buzz.limits.base import (
    CONCURRENCY_RETRY_HINT,
    Ask,
    LimiterUnavailable,
    LimitExceeded,
    LimitName,
    Rejection,
    Remaining,
    Reservation,
    Scope,
    next_month_start,
    utc_day,
    utc_month,
)
from buzz.limits.batches import Batches, Part
from buzz.limits.redis_upkeep import Leases, Settlements
from buzz.limits.resp import Redis, Script

log = logging.getLogger("buzz.limits")

# What "Redis cannot serve us right now" looks like (buzz.limits.resp raises these for a lost or
# refused connection, a deadline passed, a read-only or full Redis); anything else is a fault.
_UNAVAILABLE = (OSError,)
_MICROS = 1_000_000
_MINUTE_MICROS = 60 * _MICROS
_BUCKETS: tuple[LimitName, ...] = ("rpm", "itpm", "otpm")  # in the order the scripts pack them
_HINT_MICROS = round(CONCURRENCY_RETRY_HINT * _MICROS)


def _script(name: str) -> str:
    package = files("buzz.limits")
    return package.joinpath("common.lua").read_text() + "\n" + package.joinpath(name).read_text()


def _pack(*values: int | bool | None) -> str:
    """A scope's limits as one script argument: "" for unlimited, 1/0 for a flag."""
    return ",".join("" if v is None else str(int(v)) for v in values)


def _units(capacity: int) -> tuple[int, int]:
    """A bucket's units, as the scripts count them (common.lua's `units`): a token, and a
    microsecond's refill. A bucket refills its capacity in a minute."""
    g = math.gcd(_MINUTE_MICROS, capacity)
    return _MINUTE_MICROS // g, capacity // g


def _headroom(scopes: Sequence[Scope], reply: list[str], at: int, now: int) -> list[Remaining]:
    """What each limit has left, from the raw figures the reserve script ends its reply with
    (see its `report`), at `now` on Redis's clock: whole tokens left (rounded down) and the time
    until full (rounded up to the microsecond), as the in-process limiter reports them."""
    left: list[Remaining] = []
    sec = now // _MICROS
    for scope in scopes:
        limits = scope.limits
        if scope.reported:
            for name, capacity in zip(_BUCKETS, (limits.rpm, limits.itpm, limits.otpm), strict=True):
                if capacity is None:
                    continue
                short = int(reply[at])
                at += 1
                if short <= 0 or capacity == 0:
                    left.append((scope, name, capacity, capacity, 0.0))
                else:
                    token, rate = _units(capacity)
                    reset = -(-short // rate) / _MICROS
                    left.append((scope, name, capacity, capacity + (-short // token), reset))
            if limits.concurrency is not None:
                left.append((scope, "concurrency", limits.concurrency, limits.concurrency - int(reply[at]), None))
                at += 1
            if limits.daily_nanos is not None:
                to_day = ((sec // 86400 + 1) * 86400 * _MICROS - now) / _MICROS
                left.append((scope, "daily", limits.daily_nanos, limits.daily_nanos - int(reply[at]), to_day))
                at += 1
            if limits.monthly_nanos is not None:
                to_month = (next_month_start(sec) * _MICROS - now) / _MICROS
                left.append((scope, "monthly", limits.monthly_nanos, limits.monthly_nanos - int(reply[at]), to_month))
                at += 1
        if scope.prepaid:
            left.append((scope, "balance", None, int(reply[at]), None))
            at += 1
    return left


class RedisLimiter:
    in_process = False

    def __init__(
        self,
        url: str,
        prefix: str = "buzz:",
        fail_open: bool = False,
        *,
        timeout: float = 1.0,
        lease_seconds: float = 30.0,
        renew_every: float | None = None,
        settle_window: int = 86400,
        counters: Counters | None = None,
        settle_queue: int = 10_000,
        retry_delays: tuple[float, float] = (0.05, 5.0),
        close_timeout: float = 5.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """`timeout` bounds each attempt at a Redis call (two are made): a Redis that hangs
        fails a request within two to three timeouts, one that refuses at once. A concurrency
        slot is a lease of `lease_seconds`, renewed every `renew_every` (a third of a lease by
        default) while its request is in flight: it bounds how long a slot outlives a request
        whose settlement never reached Redis.
        `settle_window` is how long a reservation can still be settled. Up to `settle_queue`
        settlements Redis did not take wait for it, retried after the first of `retry_delays`,
        doubling up to the second; `close` tries them once more for up to `close_timeout`.
        `clock`, for tests, replaces Redis's clock: microseconds since the epoch."""
        self._prefix = prefix
        self._fail_open = fail_open
        self._lease_us = round(lease_seconds * _MICROS)
        self._window = settle_window
        self._clock = clock
        self._counters = counters if counters is not None else Counters()
        # One connection, calls pipelined on it; each call is tried once more on a new connection.
        self._redis = Redis(url, timeout=timeout, connect_timeout=timeout)
        self._reserve = Script(self._redis, _script("reserve.lua"))
        self._settle = Script(self._redis, _script("settle.lua"))
        # At most one call of each in flight; requests that come meanwhile go in the next one.
        self._reserves = Batches(self._send_reserves, cancellable=True)
        self._settles = Batches(self._send_settles, self._not_settled)
        self._spend = Script(self._redis, _script("spend.lua"))
        self._headroom = Script(self._redis, _script("headroom.lua"))
        renew = Script(self._redis, _script("renew.lua"))
        self._settlements = Settlements(
            self._settle_one,
            _UNAVAILABLE,
            self._counters,
            limit=settle_queue,
            first_delay=retry_delays[0],
            max_delay=retry_delays[1],
            close_timeout=close_timeout,
        )
        self._leases = Leases(
            renew,
            _UNAVAILABLE,
            self._counters,
            lease_us=self._lease_us,
            every=renew_every if renew_every is not None else lease_seconds / 3,
            clock=self._now,
        )

    def _now(self) -> str:
        """The clock argument of the reserve, settle and renewal scripts: "" lets them read Redis's
        own. (The others take a clock as an optional last argument.)"""
        return "" if self._clock is None else str(self._clock())

    async def _send_reserves(self, parts: list[Part]) -> list[Any]:
        args: Part = [self._window, self._lease_us, _HINT_MICROS, self._now()]
        for part in parts:
            args += part
        return cast(list[Any], await self._reserve(args))

    async def _send_settles(self, parts: list[Part]) -> list[Any]:
        args: Part = [self._window, self._now()]
        for part in parts:
            args += part
        return cast(list[Any], await self._settle(args))

    async def _settle_one(self, part: Part) -> Any:
        return (await self._send_settles([part]))[0]

    def _base(self, kind: str, scope_id: str) -> str:
        return f"{self._prefix}{kind}:{scope_id}:"

    async def _run(self, script: Script, args: list[int | float | str]) -> Any:
        try:
            return await script(args)
        except _UNAVAILABLE as error:
            raise LimiterUnavailable(f"limiter store unreachable: {type(error).__name__}") from error

    async def reserve(self, scopes: Sequence[Scope], ask: Ask) -> tuple[Reservation, list[Remaining]]:
        rid = uuid.uuid4().hex
        marker = f"{self._prefix}r:{rid}"
        part: Part = [marker, rid, ask.input_tokens, ask.output_tokens, ask.cost_nanos, len(scopes)]
        slots: list[str] = []  # the concurrency keys this request takes a slot in
        for scope in scopes:
            limits = scope.limits
            base = f"{self._prefix}{scope.kind}:{scope.id}:"
            part += [
                base,
                _pack(
                    limits.rpm,
                    limits.itpm,
                    limits.otpm,
                    limits.concurrency,
                    limits.daily_nanos,
                    limits.monthly_nanos,
                    scope.prepaid,
                    scope.reported,
                ),
            ]
            if limits.concurrency is not None:
                slots.append(base + "cx")
        try:
            reply = str(await self._reserves.call(part)).split(",")
        except _UNAVAILABLE as error:
            if not self._fail_open:
                raise LimiterUnavailable(f"limiter store unreachable: {type(error).__name__}") from error
            wall = time.time()
            return Reservation(rid, tuple(scopes), ask, utc_day(wall), utc_month(wall), checked=False), []
        status = reply[0]
        if status == "no":
            retry = float(reply[3]) if reply[3] != "" else None
            rejection = Rejection(scopes[int(reply[1]) - 1], cast(LimitName, reply[2]), retry)
            raise LimitExceeded(rejection, _headroom(scopes, reply, 5, int(reply[4])))
        if slots:
            self._leases.hold(rid, marker, slots)
        if status == "dup":
            return Reservation(rid, tuple(scopes), ask, int(reply[1]), int(reply[2])), []
        reservation = Reservation(rid, tuple(scopes), ask, int(reply[1]), int(reply[2]))
        return reservation, _headroom(scopes, reply, 4, int(reply[3]))

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int, cost_nanos: int) -> None:
        """Never raises for an outage: the settlement goes in the next batch, and one Redis does
        not take is queued and retried in the background until it does (see
        `redis_upkeep.Settlements`). Until then the worst case
        stays charged (the safe side), and the slot is held until Redis takes the settlement or
        its lease runs out, whichever comes first."""
        if min(input_tokens, output_tokens, cost_nanos) < 0:
            raise ValueError("usage cannot be negative")
        if not reservation.checked or reservation.settled:
            return
        reservation.settled = True
        self._leases.release(reservation.id)
        ask = reservation.ask
        part: Part = [
            f"{self._prefix}r:{reservation.id}",
            reservation.id,
            reservation.day,
            reservation.month,
            input_tokens - ask.input_tokens,
            output_tokens - ask.output_tokens,
            cost_nanos - ask.cost_nanos,
            len(reservation.scopes),
        ]
        for scope in reservation.scopes:
            limits = scope.limits
            part += [
                f"{self._prefix}{scope.kind}:{scope.id}:",
                _pack(limits.itpm, limits.otpm, limits.concurrency is not None, scope.prepaid),
            ]
        if self._settlements.queue:
            self._settlements.keep(part)  # an outage is under way
            return
        with contextlib.suppress(Exception):  # `_not_settled` has kept or logged it
            await self._settles.call(part)

    def _not_settled(self, parts: list[Part], error: BaseException) -> None:
        """Settlements whose call failed, or whose request was cancelled while they were in flight
        (they may have gone through: sending one again is harmless)."""
        if isinstance(error, asyncio.CancelledError):
            for part in parts:
                self._settlements.keep(part)
        elif isinstance(error, _UNAVAILABLE):
            for part in parts:
                self._settlements.keep(part, error)
        else:
            # A fault, not an outage: sent again, they would fail the same way.
            log.error("limiter: %d settlements failed with %s; dropped", len(parts), type(error).__name__)
            self._counters.add("limiter_settle_dropped", len(parts))

    async def renew_leases(self) -> None:
        """Renew the lease of every slot this process holds, in one call (a timer calls this)."""
        await self._leases.renew()

    @property
    def queued_settlements(self) -> int:
        return len(self._settlements.queue)

    async def add_balance(self, project: str, nanos: int) -> int:
        try:
            return int(await self._redis.call("INCRBY", self._base("project", project) + "bal", nanos))
        except _UNAVAILABLE as error:
            raise LimiterUnavailable(f"limiter store unreachable: {type(error).__name__}") from error

    async def balance(self, project: str) -> int:
        try:
            value = await self._redis.call("GET", self._base("project", project) + "bal")
        except _UNAVAILABLE as error:
            raise LimiterUnavailable(f"limiter store unreachable: {type(error).__name__}") from error
        return int(value or 0)

    async def spend(self, scope: Scope) -> tuple[int, int]:
        args: list[int | float | str] = [self._base(scope.kind, scope.id)]
        if self._clock is not None:
            args.append(self._clock())
        today, this_month = cast(list[int], await self._run(self._spend, args))
        return int(today), int(this_month)

    async def headroom(self, scope: Scope) -> list[Remaining]:
        limits = scope.limits
        packed = _pack(
            limits.rpm,
            limits.itpm,
            limits.otpm,
            limits.concurrency,
            limits.daily_nanos,
            limits.monthly_nanos,
            scope.prepaid,
        )
        args: list[int | float | str] = [self._base(scope.kind, scope.id), packed]
        if self._clock is not None:
            args.append(self._clock())
        reply = str(await self._run(self._headroom, args))
        if not reply:
            return []
        fields = reply.split(",")
        return [
            (
                scope,
                cast(LimitName, fields[at]),
                None if fields[at + 1] == "" else int(fields[at + 1]),
                int(fields[at + 2]),
                None if fields[at + 3] == "" else float(fields[at + 3]),
            )
            for at in range(0, len(fields), 4)
        ]

    async def ping(self) -> None:
        try:
            await self._redis.call("PING")
        except _UNAVAILABLE as error:
            raise LimiterUnavailable(f"limiter store unreachable: {type(error).__name__}") from error

    async def close(self) -> None:
        """Send what waits to be sent, stop renewing leases, try once more to deliver queued
        settlements, then disconnect."""
        await self._reserves.drain()
        await self._settles.drain()
        await self._leases.close()
        await self._settlements.close()
        await self._redis.close()
