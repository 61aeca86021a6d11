"""The scaled-out limiter: N buzz processes enforce one set of limits through one Redis.

Each `reserve` is one Lua script that checks and consumes every limit of every scope in a
single atomic step, on Redis's clock, and each `settle` is another; nothing is read into a
local copy and decided on here. Buckets, concurrency and spend keys carry TTLs, so idle
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
    utc_day,
    utc_month,
)
from buzz.limits.redis_upkeep import Leases, Settlements
from buzz.limits.resp import Redis, Script

# What "Redis cannot serve us right now" looks like (buzz.limits.resp raises these for a lost or
# refused connection, a deadline passed, a read-only or full Redis); anything else is a fault.
_UNAVAILABLE = (OSError,)
_MICROS = 1_000_000
_HINT_MICROS = round(CONCURRENCY_RETRY_HINT * _MICROS)


def _script(name: str) -> str:
    package = files("buzz.limits")
    return package.joinpath("common.lua").read_text() + "\n" + package.joinpath(name).read_text()


def _pack(*values: int | bool | None) -> str:
    """A scope's limits as one script argument: "" for unlimited, 1/0 for a flag."""
    return ",".join("" if v is None else str(int(v)) for v in values)


def _headroom(scopes: Sequence[Scope], reply: list[str], start: int) -> list[Remaining]:
    """The reply's tail: "scope,limit,capacity,remaining,reset" for each limit of each scope."""
    return [
        (
            scopes[int(reply[at]) - 1],
            cast(LimitName, reply[at + 1]),
            None if reply[at + 2] == "" else int(reply[at + 2]),
            int(reply[at + 3]),
            None if reply[at + 4] == "" else float(reply[at + 4]),
        )
        for at in range(start, len(reply), 5)
    ]


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
        self._spend = Script(self._redis, _script("spend.lua"))
        self._headroom = Script(self._redis, _script("headroom.lua"))
        renew = Script(self._redis, _script("renew.lua"))
        self._settlements = Settlements(
            self._settle,
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
        """The clock argument of the renewal script: "" lets it read Redis's own. (The other
        scripts take a clock as an optional last argument, so that production calls carry none.)"""
        return "" if self._clock is None else str(self._clock())

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
        args: list[int | float | str] = [
            marker,
            rid,
            self._window,
            self._lease_us,
            ask.input_tokens,
            ask.output_tokens,
            ask.cost_nanos,
            len(scopes),
            _HINT_MICROS,
        ]
        slots: list[str] = []  # the concurrency keys this request takes a slot in
        for scope in scopes:
            limits = scope.limits
            base = f"{self._prefix}{scope.kind}:{scope.id}:"
            args += [
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
        if self._clock is not None:
            args.append(self._clock())
        try:
            reply = str(await self._run(self._reserve, args)).split(",")
        except LimiterUnavailable:
            if not self._fail_open:
                raise
            wall = time.time()
            return Reservation(rid, tuple(scopes), ask, utc_day(wall), utc_month(wall), checked=False), []
        status = reply[0]
        if status == "no":
            retry = float(reply[3]) if reply[3] != "" else None
            rejection = Rejection(scopes[int(reply[1]) - 1], cast(LimitName, reply[2]), retry)
            raise LimitExceeded(rejection, _headroom(scopes, reply, 4))
        if slots:
            self._leases.hold(rid, marker, slots)
        if status == "dup":
            return Reservation(rid, tuple(scopes), ask, int(reply[1]), int(reply[2])), []
        return Reservation(rid, tuple(scopes), ask, int(reply[1]), int(reply[2])), _headroom(scopes, reply, 3)

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int, cost_nanos: int) -> None:
        """Never raises for an outage: a settlement Redis does not take is queued and retried in
        the background until it does (see `redis_upkeep.Settlements`). Until then the worst case
        stays charged (the safe side), and the slot is held until Redis takes the settlement or
        its lease runs out, whichever comes first."""
        if min(input_tokens, output_tokens, cost_nanos) < 0:
            raise ValueError("usage cannot be negative")
        if not reservation.checked or reservation.settled:
            return
        reservation.settled = True
        self._leases.release(reservation.id)
        ask = reservation.ask
        args: list[int | float | str] = [
            f"{self._prefix}r:{reservation.id}",
            reservation.id,
            reservation.day,
            reservation.month,
            input_tokens - ask.input_tokens,
            output_tokens - ask.output_tokens,
            cost_nanos - ask.cost_nanos,
            len(reservation.scopes),
            self._window,
        ]
        for scope in reservation.scopes:
            limits = scope.limits
            args += [
                f"{self._prefix}{scope.kind}:{scope.id}:",
                _pack(limits.itpm, limits.otpm, limits.concurrency is not None, scope.prepaid),
            ]
        if self._clock is not None:
            args.append(self._clock())
        settlements = self._settlements
        if settlements.queue:
            settlements.keep(args)  # an outage is under way
            return
        try:
            await self._settle(args)
        except _UNAVAILABLE as error:
            settlements.keep(args, error)

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

    async def close(self) -> None:
        """Stop renewing leases, try once more to deliver queued settlements, then disconnect."""
        await self._leases.close()
        await self._settlements.close()
        await self._redis.close()
