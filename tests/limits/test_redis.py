"""What only the Redis limiter has: an unreachable store, leases, TTLs, retried scripts, Lua's calendar."""

from __future__ import annotations

import asyncio
import calendar
import socket
import time
import uuid
from collections.abc import Iterator
from importlib.resources import files

import pytest
import redis
from limits_support import REDIS_URL, Clock

from buzz.limits.base import (
    Ask,
    LimiterUnavailable,
    LimitExceeded,
    Limits,
    Scope,
    seconds_to_next_day,
    seconds_to_next_month,
    utc_day,
    utc_month,
)
from buzz.limits.redis import RedisLimiter

FREE = Ask(0, 0, 0)


@pytest.fixture
def closed_port() -> Iterator[int]:
    # Bound but not listening: connections are refused at once, and nobody else can take the port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_unreachable_redis_is_unavailable_not_a_guess(closed_port: int) -> None:
    async def scenario() -> None:
        limiter = RedisLimiter(f"redis://127.0.0.1:{closed_port}/0", prefix="never:")
        try:
            with pytest.raises(LimiterUnavailable):
                await limiter.reserve([Scope("key", "k", Limits(rpm=1))], FREE)
            with pytest.raises(LimiterUnavailable):
                await limiter.balance("p")
            with pytest.raises(LimiterUnavailable):
                await limiter.add_balance("p", 1)
            with pytest.raises(LimiterUnavailable):
                await limiter.spend(Scope("key", "k"))
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_fail_open_admits_unchecked_and_settles_nothing(closed_port: int) -> None:
    async def scenario() -> None:
        limiter = RedisLimiter(f"redis://127.0.0.1:{closed_port}/0", prefix="never:", fail_open=True)
        try:
            key = Scope("key", "k", Limits(rpm=0))  # would never be admitted if checked
            reservation, remaining = await limiter.reserve([key], Ask(1, 1, 1))
            assert not reservation.checked
            assert remaining == []
            await limiter.settle(reservation, 1, 1, 1)
            with pytest.raises(LimiterUnavailable):  # money is never guessed, even fail-open
                await limiter.balance("p")
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_idle_state_expires_and_balances_do_not(redis_prefix: str, redis_client: redis.Redis) -> None:
    key = Scope("key", "k", Limits(rpm=60, itpm=600, otpm=600, concurrency=2, daily_nanos=10**9, monthly_nanos=10**10))
    project = Scope("project", "p", Limits(rpm=60), prepaid=True)

    async def scenario() -> None:
        limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix, lease_seconds=300)
        try:
            await limiter.add_balance("p", 10**6)
            held, _ = await limiter.reserve([key, project], Ask(10, 10, 100))
            done, _ = await limiter.reserve([key, project], Ask(10, 10, 100))
            await limiter.settle(done, 10, 5, 50)
        finally:
            await limiter.close()
        assert held.checked

    asyncio.run(scenario())
    ttls = {
        name.decode().removeprefix(redis_prefix): redis_client.ttl(name)
        for name in redis_client.scan_iter(match=redis_prefix + "*")
    }
    assert ttls.pop("project:p:bal") == -1
    assert 0 < ttls.pop("key:k:bx") <= 61  # a bucket lives until it would be full anyway
    assert 0 < ttls.pop("project:p:bx") <= 61
    assert 0 < ttls.pop("key:k:cx") <= 301  # concurrency: the longest lease
    assert len([name for name in ttls if name.startswith("r:")]) == 1  # the open reservation only
    assert all(ttl > 0 for ttl in ttls.values()), ttls


def test_a_slot_held_by_a_dead_process_frees_itself_when_its_lease_ends(redis_prefix: str) -> None:
    key = Scope("key", "k", Limits(concurrency=1))
    clock = Clock(10**9)

    async def scenario() -> None:
        # A process that holds a slot and dies before renewing its lease or settling.
        dead = RedisLimiter(REDIS_URL, prefix=redis_prefix, lease_seconds=20, renew_every=3600, clock=clock.micros)
        await dead.reserve([key], FREE)
        limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix, lease_seconds=20, clock=clock.micros)
        try:
            clock.advance(20 - 0.000001)
            with pytest.raises(LimitExceeded):
                await limiter.reserve([key], FREE)
            clock.advance(0.000001)
            await limiter.reserve([key], FREE)
        finally:
            await limiter.close()
            await dead.close()

    asyncio.run(scenario())


def test_a_retried_reserve_is_taken_once(redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A retry after a lost reply sends the same reservation id again.
    fixed = uuid.uuid4()
    monkeypatch.setattr("buzz.limits.redis.uuid.uuid4", lambda: fixed)
    project = Scope("project", "p", Limits(rpm=10), prepaid=True)

    async def scenario() -> None:
        limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix)
        try:
            await limiter.add_balance("p", 1000)
            first, _ = await limiter.reserve([project], Ask(1, 1, 300))
            again, remaining = await limiter.reserve([project], Ask(1, 1, 300))
            assert (again.id, again.day, again.month) == (first.id, first.day, first.month)
            assert remaining == []
            assert await limiter.balance("p") == 700
            await limiter.settle(again, 1, 1, 100)
            await limiter.settle(first, 1, 1, 100)
            assert await limiter.balance("p") == 900
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_scripts_survive_a_redis_that_forgot_them(redis_prefix: str, redis_client: redis.Redis) -> None:
    # A restarted Redis (or SCRIPT FLUSH) has no cached scripts; the limiter loads them again.
    async def scenario() -> None:
        limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix)
        try:
            reservation, _ = await limiter.reserve([Scope("key", "k", Limits(rpm=5))], FREE)
            redis_client.script_flush()
            await limiter.settle(reservation, 0, 0, 0)
            await limiter.reserve([Scope("key", "k", Limits(rpm=5))], FREE)
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_spend_days_follow_redis_time(redis_prefix: str, redis_client: redis.Redis) -> None:
    key = Scope("key", "k")

    async def scenario() -> None:
        limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix)
        try:
            reservation, _ = await limiter.reserve([key], Ask(0, 0, 123))
            seconds, _ = redis_client.time()
            assert reservation.day == seconds // 86400
            month = time.gmtime(seconds)
            assert reservation.month == month.tm_year * 12 + month.tm_mon - 1
            assert await limiter.spend(key) == (123, 123)
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_the_lua_calendar_agrees_with_pythons(redis_client: redis.Redis) -> None:
    # Redis's Lua has no date library; the scripts' own calendar must match the in-process one.
    common = files("buzz.limits").joinpath("common.lua").read_text()
    probe = common + (
        "\nlocal out = {}\nfor _, t in ipairs(ARGV) do\n"
        "  local sec, now = now_of(t)\n"
        "  local day, month, to_day, to_month = periods(sec, now)\n"
        "  out[#out + 1] = {day, month, int(to_day), int(to_month)}\n"
        "end\nreturn out\n"
    )
    # Both edges of every month, across leap years and the century rules.
    moments = [
        moment
        for year in (1999, 2000, 2024, 2025, 2100)
        for month in range(1, 13)
        for moment in (
            calendar.timegm((year, month, 1, 0, 0, 0)) + 0.25,
            calendar.timegm((year, month, calendar.monthrange(year, month)[1], 23, 59, 59)) + 0.75,
        )
    ]
    replies = redis_client.eval(probe, 0, *(round(moment * 1_000_000) for moment in moments))
    for moment, (day, month, to_day, to_month) in zip(moments, replies, strict=True):
        assert (day, month) == (utc_day(moment), utc_month(moment)), moment
        # Microseconds until each period ends: exact, as the moments are quarters of a second.
        assert int(to_day) == seconds_to_next_day(moment) * 1_000_000, moment
        assert int(to_month) == seconds_to_next_month(moment) * 1_000_000, moment


def test_headroom_only_reads(redis_prefix: str, redis_client: redis.Redis) -> None:
    key = Scope("key", "k", Limits(rpm=60, otpm=700, concurrency=2, daily_nanos=10**9))
    clock = Clock(10**9)

    def stored() -> dict[bytes, bytes | None]:
        return {name: redis_client.dump(name) for name in redis_client.scan_iter(match=redis_prefix + "*")}

    async def scenario() -> None:
        limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix, lease_seconds=20, renew_every=3600, clock=clock.micros)
        try:
            await limiter.reserve([key], Ask(0, 100, 1000))
            clock.advance(21)  # the slot's lease has run out, and nobody has removed it yet
            before = stored()
            assert len(before) == 5  # buckets, leases, day and month spend, the reservation
            remaining = await limiter.headroom(key)
            # A changed limit is converted for the answer only.
            await limiter.headroom(Scope("key", "k", Limits(rpm=120, otpm=70, concurrency=1)))
            assert stored() == before
            # Full again after 21 s, and the slot free: its lease ended, so it is not counted.
            expected = [("rpm", 60), ("otpm", 700), ("concurrency", 2), ("daily", 10**9 - 1000)]
            assert [(r[1], r[3]) for r in remaining] == expected
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_requests_that_come_together_go_in_one_call_and_are_taken_one_by_one(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    """Reserves and settles that arrive while a call is in flight wait and go in one call, which
    decides them in order: the headers count down as if each had been sent alone."""
    scope = Scope("key", "k", Limits(rpm=50, concurrency=80))

    def evalsha_calls() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    async def scenario() -> None:
        limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix)
        try:
            await limiter.reserve([scope], FREE)  # the scripts are loaded and the connection open
            before = evalsha_calls()
            reserves = (limiter.reserve([scope], FREE) for _ in range(100))
            outcomes = await asyncio.gather(*reserves, return_exceptions=True)
            assert evalsha_calls() - before == 2  # the first at once; the 99 that came meanwhile in one
            admitted = [outcome for outcome in outcomes if isinstance(outcome, tuple)]
            refused = [outcome for outcome in outcomes if isinstance(outcome, LimitExceeded)]
            assert (len(admitted), len(refused)) == (49, 51)
            assert {refusal.rejection.limit for refusal in refused} == {"rpm"}
            left = sorted(next(r[3] for r in remaining if r[1] == "rpm") for _, remaining in admitted)
            assert left == list(range(49))  # 48 left after the first of them, ..., 0 after the last
            slots = sorted(next(r[3] for r in remaining if r[1] == "concurrency") for _, remaining in admitted)
            assert slots == list(range(80 - 50, 80 - 1))  # one more slot taken by each

            before = evalsha_calls()
            await asyncio.gather(*(limiter.settle(reservation, 0, 0, 0) for reservation, _ in admitted))
            assert evalsha_calls() - before == 2
            assert redis_client.zcard(f"{redis_prefix}key:k:cx") == 1  # the first request's slot only
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_a_settlement_goes_even_if_its_request_is_cancelled(redis_client: redis.Redis, redis_prefix: str) -> None:
    scope = Scope("key", "k", Limits(concurrency=5))

    async def scenario() -> None:
        limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix)
        try:
            reservation, _ = await limiter.reserve([scope], FREE)
            assert redis_client.zcard(f"{redis_prefix}key:k:cx") == 1
            settling = asyncio.get_running_loop().create_task(limiter.settle(reservation, 0, 0, 0))
            await asyncio.sleep(0)  # it has begun: its settlement waits for the next call
            settling.cancel()
            with pytest.raises(asyncio.CancelledError):
                await settling
        finally:
            await limiter.close()  # sends what waits
        assert redis_client.zcard(f"{redis_prefix}key:k:cx") == 0
        assert redis_client.exists(f"{redis_prefix}r:{reservation.id}") == 0

    asyncio.run(scenario())
