"""One contract, two backends: what every limiter must do, run against memory and real Redis."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import NamedTuple

import pytest
from limits_support import Backend, Clock

from buzz.limits.base import (
    CONCURRENCY_RETRY_HINT,
    Ask,
    Limiter,
    LimitExceeded,
    Limits,
    Rejection,
    Remaining,
    Reservation,
    Scope,
    seconds_to_next_day,
    seconds_to_next_month,
)

DOLLAR = 1_000_000_000  # nano-dollars
FREE = Ask(0, 0, 0)
# Clocks far from zero: a machine up for four months, and about 2001 (Redis counts from the epoch).
UPTIMES = [10**7, 10**9]


class Left(NamedTuple):
    """One entry of a reserve's headroom, with names to read it by."""

    scope: Scope
    limit: str
    capacity: int | None
    remaining: int
    reset: float | None


def left(remaining: list[Remaining], scope: Scope, limit: str) -> Left:
    (match,) = [Left(*r) for r in remaining if (r[0].kind, r[0].id, r[1]) == (scope.kind, scope.id, limit)]
    return match


async def rejected(limiter: Limiter, scopes: list[Scope], ask: Ask) -> Rejection:
    with pytest.raises(LimitExceeded) as caught:
        await limiter.reserve(scopes, ask)
    return caught.value.rejection


async def admit_all(
    limiter: Limiter, scopes: list[Scope], ask: Ask, count: int
) -> tuple[list[Reservation], list[Rejection]]:
    """`count` reserves at once; which were admitted and which turned away."""

    async def one() -> Reservation | Rejection:
        try:
            reservation, _ = await limiter.reserve(scopes, ask)
        except LimitExceeded as error:
            return error.rejection
        return reservation

    outcomes = await asyncio.gather(*(one() for _ in range(count)))
    return [o for o in outcomes if isinstance(o, Reservation)], [o for o in outcomes if isinstance(o, Rejection)]


# Four budgets, each of which admits exactly 50 of the asks below: (scope, ask, limit named).
COST = 3_000_000
BUDGETS = {
    "rpm": (Scope("key", "k", Limits(rpm=50)), Ask(10, 10, COST)),
    "concurrency": (Scope("key", "k", Limits(concurrency=50)), Ask(10, 10, COST)),
    "balance": (Scope("project", "p", prepaid=True), Ask(10, 10, COST)),
    "daily": (Scope("key", "k", Limits(daily_nanos=50 * COST)), Ask(10, 10, COST)),
}


@pytest.mark.parametrize("budget", BUDGETS)
def test_200_at_once_against_a_budget_of_50_admit_exactly_50(backend: Backend, budget: str) -> None:
    scope, ask = BUDGETS[budget]

    async def scenario(limiter: Limiter) -> None:
        await limiter.add_balance("p", 50 * COST)
        admitted, turned_away = await admit_all(limiter, [scope], ask, 200)
        assert len(admitted) == 50
        assert len(turned_away) == 150
        assert {r.limit for r in turned_away} == {budget}
        if budget == "balance":
            assert await limiter.balance("p") == 0
        if budget == "daily":
            assert (await limiter.spend(scope))[0] == 50 * COST

    backend.run(scenario)


@pytest.mark.parametrize("budget", ["rpm", "balance"])
def test_two_processes_sharing_redis_admit_exactly_50(redis_prefix: str, budget: str) -> None:
    scope, ask = BUDGETS[budget]
    backend = Backend("redis", redis_prefix)

    async def scenario() -> None:
        # Two clients with their own connection pools, as two buzz processes would have.
        first, second = backend.make(), backend.make()
        try:
            await first.add_balance("p", 50 * COST)
            assert await second.balance("p") == 50 * COST  # both pools connected before the race

            async def one(i: int) -> str:
                limiter = first if i % 2 else second
                # In waves of ten, five from each process: each process batches what arrives
                # while its call is in flight, so the waves put both on the wire at the same time.
                for _ in range(i // 10):
                    await asyncio.sleep(0)
                try:
                    await limiter.reserve([scope], ask)
                except LimitExceeded:
                    return "rejected"
                return "first" if limiter is first else "second"

            outcomes = await asyncio.gather(*(one(i) for i in range(200)))
            assert outcomes.count("first") + outcomes.count("second") == 50
            assert outcomes.count("first") and outcomes.count("second")
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("uptime", UPTIMES)
def test_headroom_is_exact_at_any_uptime(backend: Backend, uptime: int) -> None:
    # 60e9 / 700 ns is no whole number, and the clock is large: float seconds get these wrong.
    key = Scope("key", "k", Limits(rpm=60, itpm=6000, otpm=700))
    clock = Clock(uptime)

    def figures(remaining: list[Remaining]) -> dict[str, tuple[int, float | None]]:
        return {
            limit: (left(remaining, key, limit).remaining, left(remaining, key, limit).reset)
            for limit in ("rpm", "itpm", "otpm")
        }

    async def scenario(limiter: Limiter) -> None:
        first, remaining = await limiter.reserve([key], Ask(23, 100, 0))
        # 100 output tokens at 700 a minute come back in 8.571428... s, advertised rounded up.
        assert figures(remaining) == {"rpm": (59, 1.0), "itpm": (5977, 0.23), "otpm": (600, 8.571429)}
        clock.advance(0.23)  # the 23 input tokens are back, exactly
        second, remaining = await limiter.reserve([key], Ask(23, 100, 0))
        assert figures(remaining) == {"rpm": (58, 1.77), "itpm": (5977, 0.23), "otpm": (502, 16.912858)}
        await limiter.settle(first, 20, 50, 0)  # 3 input and 50 output tokens given back
        _, remaining = await limiter.reserve([key], FREE)
        assert figures(remaining) == {"rpm": (57, 2.77), "itpm": (5980, 0.2), "otpm": (552, 12.627143)}
        await limiter.settle(second, 23, 800, 0)  # 700 output tokens beyond the ask: charged
        with pytest.raises(LimitExceeded) as caught:
            await limiter.reserve([key], Ask(0, 1, 0))
        # Overdrawn: 147.32 tokens below zero, so one more is 12.712857142... s away.
        assert (caught.value.rejection.limit, caught.value.rejection.retry_after) == ("otpm", 12.712858)
        assert figures(caught.value.remaining) == {"rpm": (57, 2.77), "itpm": (5980, 0.2), "otpm": (-148, 72.627143)}
        clock.advance(12.712857)
        assert (await rejected(limiter, [key], Ask(0, 1, 0))).limit == "otpm"
        clock.advance(0.000001)
        _, remaining = await limiter.reserve([key], Ask(0, 1, 0))
        assert figures(remaining) == {"rpm": (59, 1.0), "itpm": (6000, 0.0), "otpm": (0, 60.0)}

    backend.run(scenario, clock=clock)


@pytest.mark.parametrize("uptime", UPTIMES)
def test_a_retry_at_retry_after_is_admitted_and_one_a_moment_earlier_is_not(backend: Backend, uptime: int) -> None:
    key = Scope("key", "k", Limits(rpm=40))  # one request back every 1.5 s
    odd = Scope("key", "odd", Limits(otpm=7))  # one token back every 8.571428... s
    clock = Clock(uptime)

    async def scenario(limiter: Limiter) -> None:
        await admit_all(limiter, [key], FREE, 40)
        rejection = await rejected(limiter, [key], FREE)
        assert (rejection.limit, rejection.retry_after) == ("rpm", 1.5)
        # The HTTP layer advertises ceil(retry_after) whole seconds; a second before that is too early.
        clock.advance(1)
        assert (await rejected(limiter, [key], FREE)).limit == "rpm"
        clock.advance(0.499999)
        assert (await rejected(limiter, [key], FREE)).limit == "rpm"
        clock.advance(0.000001)
        await limiter.reserve([key], FREE)

        await limiter.reserve([odd], Ask(0, 7, 0))
        clock.advance(40)
        rejection = await rejected(limiter, [odd], Ask(0, 5, 0))
        # 4.666... tokens back after 40 s; the fifth is 1/3 token away: 2.857142857... s.
        assert (rejection.limit, rejection.retry_after) == ("otpm", 2.857143)
        clock.advance(2.857142)
        assert (await rejected(limiter, [odd], Ask(0, 5, 0))).limit == "otpm"
        clock.advance(0.000001)
        await limiter.reserve([odd], Ask(0, 5, 0))

    backend.run(scenario, clock=clock)


def test_an_ask_larger_than_a_limit_never_fits(backend: Backend) -> None:
    async def scenario(limiter: Limiter) -> None:
        cases: list[tuple[Limits, Ask, str]] = [
            (Limits(itpm=100), Ask(101, 0, 0), "itpm"),
            (Limits(otpm=100), Ask(0, 101, 0), "otpm"),
            (Limits(rpm=0), FREE, "rpm"),
            (Limits(concurrency=0), FREE, "concurrency"),
            (Limits(daily_nanos=99), Ask(0, 0, 100), "daily"),
            (Limits(monthly_nanos=99), Ask(0, 0, 100), "monthly"),
        ]
        for limits, ask, limit in cases:
            rejection = await rejected(limiter, [Scope("key", f"k-{limit}", limits)], ask)
            assert (rejection.limit, rejection.retry_after) == (limit, None)
        assert (await rejected(limiter, [Scope("project", "empty", prepaid=True)], Ask(0, 0, 1))).limit == "balance"

    backend.run(scenario)


def test_the_limit_named_is_the_one_that_decides_when_to_retry(backend: Backend) -> None:
    clock = Clock(10**9)

    async def scenario(limiter: Limiter) -> None:
        key = Scope("key", "k", Limits(rpm=60, itpm=600))
        await limiter.reserve([key], Ask(600, 0, 0))
        await admit_all(limiter, [key], FREE, 59)
        # rpm is back in a second, itpm (10 a second) needs 10 s for 100 tokens:
        # only the later one tells a client when a retry can pass.
        rejection = await rejected(limiter, [key], Ask(100, 0, 0))
        assert (rejection.limit, rejection.retry_after) == ("itpm", 10.0)
        # A full concurrency slot is named only when no rate can say when to come back.
        single = Scope("key", "single", Limits(rpm=1, concurrency=1))
        await limiter.reserve([single], FREE)
        rejection = await rejected(limiter, [single], FREE)
        assert (rejection.limit, rejection.retry_after) == ("rpm", 60.0)
        # Money that no waiting restores beats any rate limit.
        project = Scope("project", "broke", prepaid=True)
        rejection = await rejected(limiter, [key, project], Ask(100, 0, 1))
        assert (rejection.scope, rejection.limit, rejection.retry_after) == (project, "balance", None)
        # Spent for the month and the day: waiting for tomorrow is not enough.
        capped = Scope("key", "capped", Limits(daily_nanos=100, monthly_nanos=100))
        await limiter.reserve([capped], Ask(0, 0, 100))
        rejection = await rejected(limiter, [capped], Ask(0, 0, 1))
        assert (rejection.limit, rejection.retry_after) == ("monthly", seconds_to_next_month(10**9))

    backend.run(scenario, clock=clock)


def test_concurrency_is_released_by_settle_and_only_once(backend: Backend) -> None:
    key = Scope("key", "k", Limits(concurrency=2))

    async def scenario(limiter: Limiter) -> None:
        first, remaining = await limiter.reserve([key], FREE)
        assert left(remaining, key, "concurrency").remaining == 1
        await limiter.reserve([key], FREE)
        rejection = await rejected(limiter, [key], FREE)
        assert (rejection.limit, rejection.retry_after) == ("concurrency", CONCURRENCY_RETRY_HINT)
        await limiter.settle(first, 0, 0, 0)
        await limiter.settle(first, 0, 0, 0)  # a second settle must not free a second slot
        _, remaining = await limiter.reserve([key], FREE)
        assert left(remaining, key, "concurrency").remaining == 0
        assert (await rejected(limiter, [key], FREE)).limit == "concurrency"

    backend.run(scenario)


def test_settle_returns_unused_tokens_and_money_and_charges_extra(backend: Backend) -> None:
    key = Scope("key", "k", Limits(itpm=600, otpm=600, daily_nanos=DOLLAR))
    project = Scope("project", "p", prepaid=True)
    clock = Clock(10**7)

    async def scenario(limiter: Limiter) -> None:
        await limiter.add_balance("p", DOLLAR)
        reservation, remaining = await limiter.reserve([key, project], Ask(100, 200, 5000))
        assert left(remaining, key, "itpm").remaining == 500
        assert left(remaining, key, "otpm").remaining == 400
        assert left(remaining, key, "otpm").reset == 20.0
        assert left(remaining, key, "daily").remaining == DOLLAR - 5000
        assert left(remaining, project, "balance").remaining == DOLLAR - 5000
        assert left(remaining, project, "balance").capacity is None

        clock.advance(0.25)  # 2.5 tokens of each back
        await limiter.settle(reservation, 100, 50, 3000)
        _, remaining = await limiter.reserve([key], FREE)
        assert left(remaining, key, "otpm").remaining == 552
        assert left(remaining, key, "otpm").reset == 4.75
        assert left(remaining, key, "itpm").remaining == 502
        assert await limiter.balance("p") == DOLLAR - 3000
        assert await limiter.spend(key) == (3000, 3000)
        assert await limiter.spend(project) == (3000, 3000)

        # More than reserved: the request happened, so all of it is charged, once.
        reservation, _ = await limiter.reserve([key, project], Ask(10, 10, 1000))
        await limiter.settle(reservation, 15, 600, 4000)
        await limiter.settle(reservation, 15, 600, 4000)
        assert await limiter.balance("p") == DOLLAR - 7000
        assert await limiter.spend(key) == (7000, 7000)
        # A request reserved as free and billed after is still counted.
        reservation, _ = await limiter.reserve([project], FREE)
        await limiter.settle(reservation, 0, 0, 500)
        assert await limiter.spend(project) == (7500, 7500)
        assert await limiter.balance("p") == DOLLAR - 7500

        rejection = await rejected(limiter, [key], Ask(0, 1, 0))
        # 552.5 - 10 reserved - 590 extra: 47.5 below zero, so one token is 4.85 s away.
        assert (rejection.limit, rejection.retry_after) == ("otpm", 4.85)

    backend.run(scenario, clock=clock)


def test_a_dollar_of_balance_ends_exactly_where_the_known_costs_say(backend: Backend) -> None:
    project = Scope("project", "p", prepaid=True)
    worst = 40_000_000  # four cents reserved per request
    # One request in each wave of eight costs more than reserved, the rest less.
    actual = [10_000_000, 25_000_000, 40_000_000, 47_000_000, 33_000_000, 1_000_000, 39_999_999, 0]
    overshoot = max(a - worst for a in actual)

    async def scenario(limiter: Limiter) -> None:
        assert await limiter.add_balance("p", DOLLAR) == DOLLAR
        charged, lowest, waves = 0, DOLLAR, 0
        while True:
            admitted, turned_away = await admit_all(limiter, [project], Ask(100, 100, worst), len(actual))
            assert {r.limit for r in turned_away} <= {"balance"}
            assert await limiter.balance("p") >= 0  # reserving never overdraws
            for reservation, cost in zip(admitted, actual, strict=False):
                await limiter.settle(reservation, 100, 100, cost)
                charged += cost
                lowest = min(lowest, await limiter.balance("p"))
            waves += 1
            if not admitted:
                break
        assert waves > 3
        assert lowest >= -overshoot
        assert await limiter.balance("p") == DOLLAR - charged
        assert await limiter.spend(project) == (charged, charged)

    backend.run(scenario)


def test_a_rejection_by_one_scope_consumes_nothing_from_the_other(backend: Backend) -> None:
    key = Scope("key", "k", Limits(rpm=1))
    project = Scope("project", "p", Limits(rpm=10, itpm=1000, concurrency=5, daily_nanos=DOLLAR), prepaid=True)

    async def scenario(limiter: Limiter) -> None:
        await limiter.add_balance("p", 10_000)
        await limiter.reserve([key, project], Ask(100, 0, 1000))
        assert (await rejected(limiter, [key, project], Ask(100, 0, 1000))).scope == key
        assert await limiter.balance("p") == 9000
        assert await limiter.spend(project) == (1000, 1000)
        _, remaining = await limiter.reserve([project], FREE)
        # A reserve reports a project's balance only; its other limits are read with headroom.
        assert [(r[1], r[3]) for r in remaining] == [("balance", 9000)]
        headroom = await limiter.headroom(project)
        assert left(headroom, project, "rpm").remaining == 8
        assert left(headroom, project, "itpm").remaining == 900
        assert left(headroom, project, "concurrency").remaining == 3

        # And the other way round: the project's balance turns it away, the key keeps its request.
        other = Scope("key", "other", Limits(rpm=1))
        assert (await rejected(limiter, [other, project], Ask(0, 0, 10_000))).limit == "balance"
        await limiter.reserve([other], FREE)

    backend.run(scenario)


def test_spend_caps_reopen_at_the_next_utc_day(backend: Backend) -> None:
    key = Scope("key", "k", Limits(daily_nanos=1000, monthly_nanos=10_000))

    async def scenario(limiter: Limiter) -> None:
        reservation, remaining = await limiter.reserve([key], Ask(0, 0, 1000))
        assert left(remaining, key, "daily").reset == pytest.approx(seconds_to_next_day(time.time()), abs=2)
        assert left(remaining, key, "monthly").remaining == 9000
        rejection = await rejected(limiter, [key], Ask(0, 0, 1))
        assert rejection.limit == "daily"
        assert rejection.retry_after == pytest.approx(seconds_to_next_day(time.time()), abs=2)
        await limiter.settle(reservation, 0, 0, 400)  # settling to the actual frees the rest
        await limiter.reserve([key], Ask(0, 0, 600))
        assert await limiter.spend(key) == (1000, 1000)

    backend.run(scenario)


def test_a_rejection_reports_what_every_limit_has_left(backend: Backend) -> None:
    key = Scope("key", "k", Limits(rpm=2, itpm=600, daily_nanos=DOLLAR))
    project = Scope("project", "p", prepaid=True)
    clock = Clock(10**9)

    async def scenario(limiter: Limiter) -> None:
        await limiter.add_balance("p", DOLLAR)
        for _ in range(2):
            await limiter.reserve([key, project], Ask(100, 0, 1000))
        with pytest.raises(LimitExceeded) as caught:
            await limiter.reserve([key, project], Ask(100, 0, 1000))
        exceeded = caught.value
        assert exceeded.rejection.limit == "rpm"
        assert left(exceeded.remaining, key, "rpm")[3:] == (0, 60.0)  # two requests at two a minute
        # What the two admitted requests took, and nothing for the one turned away.
        assert left(exceeded.remaining, key, "itpm")[3:] == (400, 20.0)
        # Spend periods end at UTC midnight: 1e9 s is 01:46:40 on 9 September 2001.
        assert left(exceeded.remaining, key, "daily")[3:] == (DOLLAR - 2000, 80000.0)
        assert left(exceeded.remaining, project, "balance").remaining == DOLLAR - 2000
        assert await limiter.balance("p") == DOLLAR - 2000

    backend.run(scenario, clock=clock)


def test_changed_limits_apply_to_the_next_request(backend: Backend) -> None:
    clock = Clock(10**7)

    async def scenario(limiter: Limiter) -> None:
        for _ in range(4):
            await limiter.reserve([Scope("key", "k", Limits(rpm=10))], FREE)
        # Lowered below what is left (6): the bucket holds the new capacity, not more.
        lowered = Scope("key", "k", Limits(rpm=3))
        for _ in range(3):
            await limiter.reserve([lowered], FREE)
        rejection = await rejected(limiter, [lowered], FREE)
        assert rejection.retry_after == 20.0  # one request at 3 a minute
        # Raised: what is left stays, and it refills at the new rate (one a second).
        raised = Scope("key", "k", Limits(rpm=60, itpm=100))
        assert (await rejected(limiter, [raised], FREE)).retry_after == 1.0
        clock.advance(1)
        reservation, remaining = await limiter.reserve([raised], Ask(100, 0, 0))
        # A limit that was not there before starts full: all 100 input tokens were there to take.
        assert [(limit, left) for _, limit, _, left, _ in remaining] == [("rpm", 0), ("itpm", 0)]
        # Settled, then the limit lowered: the unused tokens came back, up to the new cap.
        await limiter.settle(reservation, 0, 0, 0)
        clock.advance(1)
        _, remaining = await limiter.reserve([Scope("key", "k", Limits(rpm=60, itpm=40))], FREE)
        assert [(limit, left) for _, limit, _, left, _ in remaining] == [("rpm", 0), ("itpm", 40)]

        # Capacities with no whole number of microseconds a token: what is left is kept exactly.
        await limiter.reserve([Scope("key", "odd", Limits(otpm=7))], Ask(0, 5, 0))
        clock.advance(1)  # 7/60 of a token back: 2.1166... left
        _, remaining = await limiter.reserve([Scope("key", "odd", Limits(otpm=11))], FREE)
        assert left(remaining, Scope("key", "odd"), "otpm")[3:] == (2, 48.454546)  # 8.8833... short at 11 a minute
        _, remaining = await limiter.reserve([Scope("key", "odd", Limits(otpm=3))], FREE)
        assert left(remaining, Scope("key", "odd"), "otpm")[3:] == (2, 17.666667)  # cut to 3: 0.8833... short

    backend.run(scenario, clock=clock)


@pytest.mark.parametrize("uptime", UPTIMES)
def test_headroom_shows_what_is_left_and_takes_nothing(backend: Backend, uptime: int) -> None:
    key = Scope(
        "key", "k", Limits(rpm=60, itpm=6000, otpm=700, concurrency=3, daily_nanos=DOLLAR, monthly_nanos=2 * DOLLAR)
    )
    project = Scope("project", "p", Limits(rpm=10), prepaid=True)
    clock = Clock(uptime)

    def figures(remaining: list[Remaining]) -> dict[str, tuple[int | None, int, float | None]]:
        """limit -> (capacity, remaining, reset), resets to the microsecond."""
        return {r[1]: (r[2], r[3], None if r[4] is None else round(r[4], 6)) for r in remaining}

    async def scenario(limiter: Limiter) -> None:
        await limiter.add_balance("p", DOLLAR)
        day, month = round(seconds_to_next_day(clock.wall()), 6), round(seconds_to_next_month(clock.wall()), 6)
        # Never used: every limit is whole, in the documented order; no limits, nothing to show.
        fresh = await limiter.headroom(key)
        assert [r[1] for r in fresh] == ["rpm", "itpm", "otpm", "concurrency", "daily", "monthly"]
        assert figures(fresh) == {
            "rpm": (60, 60, 0.0),
            "itpm": (6000, 6000, 0.0),
            "otpm": (700, 700, 0.0),
            "concurrency": (3, 3, None),
            "daily": (DOLLAR, DOLLAR, day),
            "monthly": (2 * DOLLAR, 2 * DOLLAR, month),
        }
        assert figures(await limiter.headroom(project)) == {"rpm": (10, 10, 0.0), "balance": (None, DOLLAR, None)}
        assert await limiter.headroom(Scope("key", "unlimited")) == []

        first, reported = await limiter.reserve([key, project], Ask(23, 100, 5000))
        # At the same moment, the same figures as the reserve reported.
        assert figures(await limiter.headroom(key)) == figures([r for r in reported if r[0] == key])
        # Of a project, a reserve reports the balance alone (what the headers show).
        assert figures([r for r in reported if r[0] == project]) == {"balance": (None, DOLLAR - 5000, None)}
        assert figures(await limiter.headroom(project))["balance"] == (None, DOLLAR - 5000, None)

        # Asked again and again, it takes nothing: two more requests fit a concurrency of 3, a third does not.
        for _ in range(20):
            await limiter.headroom(key)
        await limiter.reserve([key], FREE)
        await limiter.reserve([key], FREE)
        assert (await rejected(limiter, [key], FREE)).limit == "concurrency"
        assert figures(await limiter.headroom(key))["concurrency"] == (3, 0, None)
        await limiter.settle(first, 23, 100, 4000)
        after = figures(await limiter.headroom(key))
        assert after["concurrency"] == (3, 1, None)
        assert after["daily"][1] == DOLLAR - 4000 and after["monthly"][1] == 2 * DOLLAR - 4000
        assert after["rpm"][1] == 57
        assert figures(await limiter.headroom(project))["balance"] == (None, DOLLAR - 4000, None)
        clock.advance(0.23)  # the 23 input tokens are back, exactly
        assert figures(await limiter.headroom(key))["itpm"] == (6000, 6000, 0.0)

        # A limit changed since the scope's last request reads as its next reserve will apply it
        # (the level kept), and the scope's stored figures stay as they were until then.
        before = figures(await limiter.headroom(key))
        raised = Scope("key", "k", replace(key.limits, otpm=1400))
        seen = figures(await limiter.headroom(raised))
        assert seen["otpm"][0] == 1400 and seen["otpm"][1] == before["otpm"][1]
        assert figures(await limiter.headroom(key)) == before
        _, reported = await limiter.reserve([raised], FREE)
        assert figures(reported)["otpm"] == seen["otpm"]

    backend.run(scenario, clock=clock)
