"""The Redis limiter through an outage: settlements are kept until Redis takes them, and a
concurrency slot lives as long as its request (renewed leases), never much longer.

Each test runs its own redis-server, which it cuts off (a TCP proxy in between) or stops
(SIGSTOP), so the Redis everybody shares is never disturbed. An observer limiter talks to the
server directly, to see what Redis holds while the limiter under test cannot reach it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from limits_support import Clock, CutProxy

from buzz.counters import Counters
from buzz.limits.base import Ask, LimitExceeded, Limits, Scope
from buzz.limits.redis import RedisLimiter
from support import RedisServer

FREE = Ask(0, 0, 0)
PREFIX = "outage:"
FAST_RETRY = (0.01, 0.05)  # seconds before the first retry of a queued settlement, and at most


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as running:
        yield running


async def eventually(condition: Callable[[], bool | Awaitable[bool]], within: float = 30.0) -> None:
    """Wait for a condition with a generous deadline; what is asserted is the condition."""
    deadline = time.monotonic() + within
    while True:
        outcome = condition()
        met = outcome if isinstance(outcome, bool) else await outcome
        if met or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert met


async def concurrency_rejected(limiter: RedisLimiter, scope: Scope) -> bool:
    try:
        await limiter.reserve([scope], FREE)
    except LimitExceeded as exceeded:
        return exceeded.rejection.limit == "concurrency"
    return False


async def admitted(limiter: RedisLimiter, scope: Scope) -> bool:
    return not await concurrency_rejected(limiter, scope)


def test_a_settlement_redis_did_not_take_is_delivered_when_it_is_back(server: RedisServer) -> None:
    key = Scope("key", "k", Limits(concurrency=1, daily_nanos=10**9))
    project = Scope("project", "p", prepaid=True)
    counters = Counters()

    async def scenario() -> None:
        proxy = await CutProxy(server.port).start()
        limiter = RedisLimiter(proxy.url, prefix=PREFIX, counters=counters, retry_delays=FAST_RETRY)
        observer = RedisLimiter(server.url, prefix=PREFIX)
        try:
            await observer.add_balance("p", 1000)
            first, _ = await limiter.reserve([key, project], Ask(10, 10, 600))
            proxy.cut()
            await limiter.settle(first, 10, 10, 100)  # returns: kept for later, not raised
            assert counters.get("limiter_settle_failed") == 1
            assert limiter.queued_settlements == 1
            # Meanwhile the worst case stays charged, and the slot stays taken.
            assert await concurrency_rejected(observer, key)
            assert await observer.balance("p") == 400
            proxy.restore()
            await eventually(lambda: counters.get("limiter_settle_retried_ok") == 1)
            assert limiter.queued_settlements == 0
            assert await observer.balance("p") == 900
            assert await observer.spend(key) == (100, 100)
            await observer.reserve([key], FREE)  # the slot came back
            assert counters.get("limiter_settle_dropped") == 0
        finally:
            await limiter.close()
            await observer.close()
            await proxy.close()

    asyncio.run(scenario())


def test_settle_returns_when_redis_hangs_and_delivers_once_it_answers(server: RedisServer) -> None:
    key = Scope("key", "k", Limits(concurrency=1))
    counters = Counters()

    async def scenario() -> None:
        limiter = RedisLimiter(server.url, prefix=PREFIX, counters=counters, timeout=0.2, retry_delays=FAST_RETRY)
        try:
            reservation, _ = await limiter.reserve([key], FREE)
            server.pause()  # connections stay open; nothing answers
            try:
                await limiter.settle(reservation, 0, 0, 0)  # both attempts time out: queued
                assert counters.get("limiter_settle_failed") == 1
            finally:
                server.resume()
            await eventually(lambda: counters.get("limiter_settle_retried_ok") == 1)
            await limiter.reserve([key], FREE)  # the slot came back
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_the_queue_is_bounded_and_logs_an_outage_once(server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    key = Scope("key", "k", Limits(concurrency=5))
    counters = Counters()
    caplog.set_level(logging.INFO, logger="buzz.limits")

    async def scenario() -> None:
        proxy = await CutProxy(server.port).start()
        limiter = RedisLimiter(proxy.url, prefix=PREFIX, counters=counters, settle_queue=2, retry_delays=FAST_RETRY)
        try:
            held = [(await limiter.reserve([key], FREE))[0] for _ in range(3)]
            proxy.cut()
            for reservation in held:
                await limiter.settle(reservation, 0, 0, 0)
            assert (counters.get("limiter_settle_failed"), counters.get("limiter_settle_dropped")) == (3, 1)
            assert limiter.queued_settlements == 2
            proxy.restore()
            await eventually(lambda: limiter.queued_settlements == 0)
            # Every settlement not taken at once is accounted for: delivered later, or dropped.
            assert counters.get("limiter_settle_retried_ok") == 2
        finally:
            await limiter.close()
            await proxy.close()

    asyncio.run(scenario())
    lines = [record.getMessage() for record in caplog.records if record.name == "buzz.limits"]
    # One line when the queue starts, one when it is full, one when it is empty again: not one
    # per request, and the error's type only.
    assert len(lines) == 3, lines
    assert lines[0].startswith("limiter: Redis did not take a settlement (ConnectionError)")
    assert "queue full" in lines[1]
    assert lines[2] == "limiter: Redis took every queued settlement"


def test_close_makes_a_last_attempt_and_counts_what_it_could_not_deliver(server: RedisServer) -> None:
    key = Scope("key", "k", Limits(concurrency=1))
    counters = Counters()
    never = (3600.0, 3600.0)  # no background retry during this test: only close() tries

    async def scenario() -> None:
        proxy = await CutProxy(server.port).start()
        observer = RedisLimiter(server.url, prefix=PREFIX)
        try:
            limiter = RedisLimiter(proxy.url, prefix=PREFIX, counters=counters, retry_delays=never)
            reservation, _ = await limiter.reserve([key], FREE)
            proxy.cut()
            await limiter.settle(reservation, 0, 0, 0)
            proxy.restore()
            await limiter.close()
            assert counters.get("limiter_settle_retried_ok") == 1
            await observer.reserve([key], FREE)  # delivered at close: the slot came back

            stranded = RedisLimiter(proxy.url, prefix=PREFIX + "2:", counters=counters, retry_delays=never)
            reservation, _ = await stranded.reserve([key], FREE)
            proxy.cut()
            await stranded.settle(reservation, 0, 0, 0)
            await stranded.close()  # Redis still unreachable: given up, and counted
            assert counters.get("limiter_settle_dropped") == 1
            assert counters.get("limiter_settle_failed") == 2
        finally:
            await observer.close()
            await proxy.close()

    asyncio.run(scenario())


def test_a_slot_lives_as_long_as_its_request_and_a_lost_settlement_one_lease_more(server: RedisServer) -> None:
    key = Scope("key", "k", Limits(concurrency=2))
    clock = Clock(10**9)
    counters = Counters()

    async def scenario() -> None:
        proxy = await CutProxy(server.port).start()
        # Renewals are called by hand here (the timer is set far off), so the clock alone decides.
        limiter = RedisLimiter(
            proxy.url,
            prefix=PREFIX,
            counters=counters,
            lease_seconds=20,
            renew_every=3600,
            settle_queue=0,
            clock=clock.micros,
        )
        observer = RedisLimiter(server.url, prefix=PREFIX, clock=clock.micros)
        try:
            lost, _ = await limiter.reserve([key], FREE)
            await limiter.reserve([key], FREE)  # a request still in flight
            proxy.cut()
            await limiter.settle(lost, 0, 0, 0)  # the queue holds nothing: dropped
            assert counters.get("limiter_settle_dropped") == 1
            proxy.restore()
            clock.advance(15)
            await limiter.renew_leases()  # the request in flight only: the other one has ended
            clock.advance(5 - 0.000001)
            assert await concurrency_rejected(observer, key)
            clock.advance(0.000001)  # one lease after its last renewal, the lost slot is back
            first, remaining = await observer.reserve([key], FREE)
            assert [r[3] for r in remaining if r[1] == "concurrency"] == [0]
            clock.advance(15 - 0.000001)  # the live request's lease, renewed at +15, runs to +35
            await observer.settle(first, 0, 0, 0)
            assert await admitted(observer, key)
            assert await concurrency_rejected(observer, key)
        finally:
            await limiter.close()
            await observer.close()
            await proxy.close()

    asyncio.run(scenario())


def test_one_call_renews_every_slot_in_flight(server: RedisServer) -> None:
    clock = Clock(10**9)
    scopes = [Scope("key", f"k{i}", Limits(concurrency=10)) for i in range(5)]
    direct = redis.Redis.from_url(server.url, decode_responses=True)

    def evalsha_calls() -> int:
        return int(direct.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    def leases(scope: Scope) -> list[float]:
        return [score for _, score in direct.zrange(f"{PREFIX}key:{scope.id}:cx", 0, -1, withscores=True)]

    async def scenario() -> None:
        limiter = RedisLimiter(server.url, prefix=PREFIX, lease_seconds=20, renew_every=3600, clock=clock.micros)
        try:
            held = [(await limiter.reserve([scope], FREE))[0] for scope in scopes for _ in range(4)]
            await limiter.renew_leases()  # the first call also loads the script
            clock.advance(10)
            before = evalsha_calls()
            await limiter.renew_leases()
            assert evalsha_calls() - before == 1  # twenty slots, one call
            assert all(leases(scope) == [clock.micros() + 20_000_000] * 4 for scope in scopes)
            # Settled requests are not renewed, and nothing brings their slots back.
            for reservation in held[::2]:
                await limiter.settle(reservation, 0, 0, 0)
            clock.advance(10)
            await limiter.renew_leases()
            assert all(leases(scope) == [clock.micros() + 20_000_000] * 2 for scope in scopes)
            # A request still in flight after an outage longer than its lease gets its slot back.
            clock.advance(25)
            await limiter.reserve([scopes[0]], FREE)  # lets the lapsed leases of k0 go
            assert len(leases(scopes[0])) == 1
            await limiter.renew_leases()
            assert len(leases(scopes[0])) == 3
        finally:
            await limiter.close()
            direct.close()

    asyncio.run(scenario())


def test_leases_are_renewed_on_a_timer_and_lapse_without_it(server: RedisServer) -> None:
    # Real time here, to see the timer at work: a short lease, renewed often. Nothing waits a
    # fixed time or measures one; each step waits for Redis's clock or for the slot itself.
    key = Scope("key", "k", Limits(concurrency=1))
    direct = redis.Redis.from_url(server.url, decode_responses=True)

    def redis_micros() -> int:
        seconds, micros = direct.time()
        return int(seconds) * 1_000_000 + int(micros)

    async def scenario() -> None:
        proxy = await CutProxy(server.port).start()
        limiter = RedisLimiter(proxy.url, prefix=PREFIX, lease_seconds=3, renew_every=0.05, settle_queue=0)
        observer = RedisLimiter(server.url, prefix=PREFIX)
        try:
            reservation, _ = await limiter.reserve([key], FREE)
            first_lease = direct.zscore(f"{PREFIX}key:k:cx", reservation.id)
            assert first_lease is not None
            await eventually(lambda: redis_micros() > first_lease)
            assert await concurrency_rejected(observer, key)  # past its first lease: renewed
            proxy.cut()
            await limiter.settle(reservation, 0, 0, 0)  # dropped: only its lease can free the slot
            proxy.restore()
            await eventually(lambda: admitted(observer, key))
        finally:
            await limiter.close()
            await observer.close()
            await proxy.close()
            direct.close()

    asyncio.run(scenario())
