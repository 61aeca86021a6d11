"""The in-process limiter on a clock the test controls: exact to the nanosecond, and across midnight."""

from __future__ import annotations

import asyncio
import calendar

import pytest

from buzz.limits.base import Ask, LimitExceeded, Limits, Scope
from buzz.limits.memory import MemoryLimiter

FREE = Ask(0, 0, 0)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Nanos:
    """The limiter's monotonic clock: integer nanoseconds."""

    def __init__(self, seconds: int) -> None:
        self.now = seconds * 1_000_000_000

    def __call__(self) -> int:
        return self.now


class DictBalances:
    """A BalanceStore as the embedded default's SQLite one behaves: every change written through."""

    def __init__(self, **balances: int) -> None:
        self.balances = dict(balances)
        self.writes: list[tuple[str, int]] = []

    def get(self, project: str) -> int:
        return self.balances.get(project, 0)

    def add(self, project: str, delta: int) -> None:
        self.balances[project] = self.get(project) + delta
        self.writes.append((project, delta))


@pytest.mark.parametrize("uptime", [0, 10**7, 10**9, 10**12])
def test_a_bucket_is_exact_to_the_nanosecond_at_any_uptime(uptime: int) -> None:
    clock = Nanos(uptime)
    key = Scope("key", "k", Limits(rpm=3))
    odd = Scope("key", "odd", Limits(itpm=7))

    async def scenario() -> None:
        limiter = MemoryLimiter(clock=clock)
        for _ in range(3):
            await limiter.reserve([key], FREE)
        with pytest.raises(LimitExceeded) as caught:
            await limiter.reserve([key], FREE)
        assert caught.value.rejection.retry_after == 20.0
        clock.now += 20 * 10**9 - 1
        with pytest.raises(LimitExceeded):
            await limiter.reserve([key], FREE)
        clock.now += 1
        _, remaining = await limiter.reserve([key], FREE)
        assert [(limit, left, reset) for _, limit, _, left, reset in remaining] == [("rpm", 0, 60.0)]

        # A token of 7 a minute is 8,571,428,571.43 ns: not whole, yet the level is exact.
        start = clock.now
        await limiter.reserve([odd], Ask(7, 0, 0))
        clock.now = start + 8_571_428_571
        _, remaining = await limiter.reserve([odd], FREE)
        assert [(limit, left, reset) for _, limit, _, left, reset in remaining] == [("itpm", 0, 51.428572)]
        clock.now += 1
        _, remaining = await limiter.reserve([odd], FREE)
        assert [(limit, left, reset) for _, limit, _, left, reset in remaining] == [("itpm", 1, 51.428572)]
        clock.now = start + 60 * 10**9
        _, remaining = await limiter.reserve([odd], Ask(7, 0, 0))
        assert [(limit, left, reset) for _, limit, _, left, reset in remaining] == [("itpm", 0, 60.0)]

    asyncio.run(scenario())


def test_spend_resets_at_utc_midnight_and_the_month_at_month_end() -> None:
    wall = Clock(calendar.timegm((2025, 1, 31, 23, 59, 59)))
    key = Scope("key", "k", Limits(daily_nanos=100, monthly_nanos=150))

    async def scenario() -> None:
        limiter = MemoryLimiter(wall=wall)
        limiter.restore_spend("key", "k", 40, 90)  # what the ledger says was spent before a restart
        with pytest.raises(LimitExceeded) as caught:
            await limiter.reserve([key], Ask(0, 0, 61))
        assert (caught.value.rejection.limit, caught.value.rejection.retry_after) == ("monthly", 1.0)
        late, _ = await limiter.reserve([key], Ask(0, 0, 60))
        assert await limiter.spend(key) == (100, 150)
        wall.now += 1.5  # 1 February, 00:00:00.5
        assert await limiter.spend(key) == (0, 0)
        await limiter.settle(late, 0, 0, 10)  # January's figures are gone; February's untouched
        assert await limiter.spend(key) == (0, 0)
        await limiter.reserve([key], Ask(0, 0, 100))
        with pytest.raises(LimitExceeded) as caught:
            await limiter.reserve([key], Ask(0, 0, 1))
        assert caught.value.rejection.limit == "daily"
        assert caught.value.rejection.retry_after == pytest.approx(86400 - 0.5)

    asyncio.run(scenario())


def test_balances_are_loaded_from_and_written_through_to_the_store() -> None:
    store = DictBalances(p=1000)
    project = Scope("project", "p", prepaid=True)

    async def scenario() -> None:
        limiter = MemoryLimiter(balances=store)
        assert await limiter.balance("p") == 1000
        reservation, _ = await limiter.reserve([project], Ask(0, 0, 300))
        await limiter.settle(reservation, 0, 0, 120)
        assert await limiter.add_balance("p", 50) == 930
        assert store.balances == {"p": 930}
        assert store.writes == [("p", -300), ("p", 180), ("p", 50)]
        # A restarted process starts from what the store kept.
        assert await MemoryLimiter(balances=store).balance("p") == 930

    asyncio.run(scenario())
