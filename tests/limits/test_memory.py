"""The in-process limiter on a clock the test controls: exact to the microsecond, and across midnight."""

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


def test_retry_after_is_exact_to_the_microsecond() -> None:
    clock = Clock(1000.0)
    key = Scope("key", "k", Limits(rpm=3))

    async def scenario() -> None:
        limiter = MemoryLimiter(clock=clock)
        for _ in range(3):
            await limiter.reserve([key], FREE)
        with pytest.raises(LimitExceeded) as caught:
            await limiter.reserve([key], FREE)
        assert caught.value.rejection.retry_after == 20.0
        clock.now += 20.0 - 1e-6
        with pytest.raises(LimitExceeded):
            await limiter.reserve([key], FREE)
        clock.now += 1e-6
        await limiter.reserve([key], FREE)
        # 7 a minute is no round number of seconds: the advertised moment still admits.
        odd = Scope("key", "odd", Limits(otpm=7))
        await limiter.reserve([odd], Ask(0, 7, 0))
        clock.now += 40.0
        with pytest.raises(LimitExceeded) as caught:
            await limiter.reserve([odd], Ask(0, 5, 0))
        retry = caught.value.rejection.retry_after
        assert retry is not None
        clock.now += retry - 1e-6
        with pytest.raises(LimitExceeded):
            await limiter.reserve([odd], Ask(0, 5, 0))
        clock.now += 1e-6
        await limiter.reserve([odd], Ask(0, 5, 0))

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


def test_changed_limits_apply_to_the_next_request() -> None:
    clock = Clock(1000.0)

    async def scenario() -> None:
        limiter = MemoryLimiter(clock=clock)
        for _ in range(4):
            await limiter.reserve([Scope("key", "k", Limits(rpm=10))], FREE)
        # Lowered below what is left (6): the bucket holds the new capacity, not more.
        lowered = Scope("key", "k", Limits(rpm=3))
        for _ in range(3):
            await limiter.reserve([lowered], FREE)
        with pytest.raises(LimitExceeded) as caught:
            await limiter.reserve([lowered], FREE)
        assert caught.value.rejection.retry_after == 20.0  # one request at 3 a minute
        # Raised: what is left stays, and it refills at the new rate (one a second).
        raised = Scope("key", "k", Limits(rpm=60, itpm=100))
        with pytest.raises(LimitExceeded) as caught:
            await limiter.reserve([raised], FREE)
        assert caught.value.rejection.retry_after == 1.0
        clock.now += 1.0
        reservation, remaining = await limiter.reserve([raised], Ask(100, 0, 0))
        # A limit that was not there before starts full: all 100 input tokens were there to take.
        assert [(limit, left) for _, limit, _, left, _ in remaining] == [("rpm", 0), ("itpm", 0)]
        # Settled after the limit was lowered again: the unused tokens come back, up to the new cap.
        await limiter.settle(reservation, 0, 0, 0)
        clock.now += 1.0
        _, remaining = await limiter.reserve([Scope("key", "k", Limits(rpm=60, itpm=40))], FREE)
        assert [(limit, left) for _, limit, _, left, _ in remaining] == [("rpm", 0), ("itpm", 40)]

    asyncio.run(scenario())
