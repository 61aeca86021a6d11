"""The hold board contract, on both backends: the later deadline wins, a clear lifts only what was
set before it, and (Redis) every process hears of every change."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis

from buzz.config import Config, CredentialConfig, ProviderConfig
from buzz.counters import Counters
from buzz.pools.base import FOREVER, Hold, HoldBoard
from buzz.pools.memory import MemoryBoard
from buzz.pools.pool import BILLING_PROBE_DELAY, Pools
from buzz.pools.redis import RedisBoard
from support import Clock, RedisServer, redis_url

REDIS_DB = 10
Scenario = Callable[[HoldBoard, Clock], Awaitable[None]]


@pytest.fixture
def flushed() -> str:
    url = redis_url(REDIS_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(params=["memory", "redis"])
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """Runs a scenario against a fresh board of each backend, on an event loop of its own."""

    def runner(scenario: Scenario) -> None:
        clock = Clock(1_000_000.0)

        async def go() -> None:
            url = request.getfixturevalue("flushed") if request.param == "redis" else ""
            board: HoldBoard = RedisBoard(url, clock) if url else MemoryBoard(clock)
            try:
                await scenario(board, clock)
            finally:
                await board.close()

        asyncio.run(go())

    return runner


def test_the_later_deadline_wins(run: Callable[[Scenario], None]) -> None:
    async def scenario(board: HoldBoard, clock: Clock) -> None:
        now = clock()
        long = Hold(now + 60, "rate_limited", now)
        short = Hold(now + 5, "overloaded", now + 1)
        assert await board.put("anthropic", "a", long) == long
        assert await board.put("anthropic", "a", short) == long  # kept: its deadline is later
        assert await board.read() == {("anthropic", "a"): long}
        disabled = Hold(FOREVER, "auth", now + 2)
        assert await board.put("anthropic", "a", disabled) == disabled  # a disable outlasts any hold
        assert await board.put("anthropic", "a", Hold(now + 3600, "rate_limited", now + 3)) == disabled
        assert await board.read() == {("anthropic", "a"): disabled}

    run(scenario)


def test_holds_are_kept_per_vendor_and_credential_and_expire(run: Callable[[Scenario], None]) -> None:
    async def scenario(board: HoldBoard, clock: Clock) -> None:
        now = clock()
        await board.put("anthropic", "a", Hold(now + 10, "rate_limited", now))
        await board.put("openai", "a", Hold(now + 20, "unreachable", now))
        await board.put("anthropic", "b", Hold(now + 30, "overloaded", now))
        assert set(await board.read()) == {("anthropic", "a"), ("openai", "a"), ("anthropic", "b")}
        clock.now += 15
        assert set(await board.read()) == {("openai", "a"), ("anthropic", "b")}
        # An expired hold is replaced by any new one.
        assert (await board.put("anthropic", "a", Hold(clock.now + 1, "overloaded", clock.now))).cause == "overloaded"

    run(scenario)


def test_a_clear_lifts_only_holds_set_before_it(run: Callable[[Scenario], None]) -> None:
    async def scenario(board: HoldBoard, clock: Clock) -> None:
        now = clock()
        await board.put("anthropic", "a", Hold(FOREVER, "auth", now))
        assert not await board.clear("anthropic", "a", now - 1)  # the probe began before the disable
        assert ("anthropic", "a") in await board.read()
        assert await board.clear("anthropic", "a", now + 1)
        assert await board.read() == {}
        assert not await board.clear("anthropic", "a", now + 2)  # nothing left to lift

    run(scenario)


def test_every_process_hears_of_every_change(flushed: str) -> None:
    clock = Clock(1_000_000.0)

    async def scenario() -> None:
        one, two = RedisBoard(flushed, clock), RedisBoard(flushed, clock)
        heard: asyncio.Queue[tuple[str, ...]] = asyncio.Queue()

        def hold(provider: str, credential: str, held: Hold) -> None:
            heard.put_nowait(("hold", provider, credential, repr(held.until), held.cause))

        def clear(provider: str, credential: str, set_before: float) -> None:
            heard.put_nowait(("clear", provider, credential, repr(set_before)))

        try:
            await two.start(hold, clear)
            now = clock()
            await one.put("anthropic", "acct-a", Hold(now + 30, "rate_limited", now))
            expected = ("hold", "anthropic", "acct-a", repr(now + 30), "rate_limited")
            assert await asyncio.wait_for(heard.get(), 5) == expected
            # A put that changes nothing announces nothing: what comes next is the clear. (The same
            # hold may come twice, announced and read at subscription: applying it again is harmless.)
            await one.put("anthropic", "acct-a", Hold(now + 1, "overloaded", now))
            assert await one.clear("anthropic", "acct-a", now + 5)
            following = await asyncio.wait_for(heard.get(), 5)
            if following == expected:
                following = await asyncio.wait_for(heard.get(), 5)
            assert following == ("clear", "anthropic", "acct-a", repr(now + 5))
        finally:
            await one.close()
            await two.close()

    asyncio.run(scenario())


def test_a_board_whose_redis_is_gone_raises_oserror(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)

    async def scenario(url: str, server: RedisServer) -> None:
        board = RedisBoard(url, clock, timeout=0.5)
        try:
            await board.put("anthropic", "a", Hold(clock() + 10, "rate_limited", clock()))
            server.stop()
            with pytest.raises(OSError):
                await board.put("anthropic", "a", Hold(clock() + 20, "rate_limited", clock()))
            with pytest.raises(OSError):
                await board.clear("anthropic", "a", clock())
            with pytest.raises(OSError):
                await board.read()
        finally:
            await board.close()

    with RedisServer(tmp_path / "redis") as server:
        asyncio.run(scenario(server.url, server))


def test_a_message_that_is_not_a_hold_is_skipped_and_the_next_heard(flushed: str) -> None:
    clock = Clock(1_000_000.0)

    async def scenario() -> None:
        board = RedisBoard(flushed, clock)
        heard: asyncio.Queue[str] = asyncio.Queue()
        raw = redis.Redis.from_url(flushed)
        try:
            await board.start(lambda provider, credential, hold: heard.put_nowait(credential), lambda *_: None)
            channel = f"buzz:holds:{REDIS_DB}"
            while raw.pubsub_numsub(channel)[0][1] < 1:  # type: ignore[index]  # noqa: ASYNC110 - Redis says when
                await asyncio.sleep(0.01)
            for garbage in (b"\xff\xfe", b"h|anthropic|x|not-a-number|auth|1", b"c|only-two", b""):
                raw.publish(channel, garbage)
            await board.put("anthropic", "after", Hold(clock() + 5, "rate_limited", clock()))
            assert await asyncio.wait_for(heard.get(), 5) == "after"
        finally:
            raw.close()
            await board.close()

    asyncio.run(scenario())


def test_another_process_keeps_a_billing_disable_as_long_as_the_one_that_set_it(flushed: str) -> None:
    clock = Clock(1_000_000.0)
    credentials = (CredentialConfig("a", "k", "http://x"), CredentialConfig("b", "k", "http://y"))
    config = Config(providers={"anthropic": ProviderConfig("http://x", credentials)})

    async def never(provider: str, credential: CredentialConfig) -> int:
        raise AssertionError("not probed within the test")

    async def scenario() -> None:
        one = Pools(config, RedisBoard(flushed, clock), never, Counters(), clock)
        two = Pools(config, RedisBoard(flushed, clock), never, Counters(), clock)
        await one.start()
        await two.start()
        try:
            lease = one.acquire("anthropic")
            lease.answered(402, {})
            lease.release()
            for _ in range(500):
                seen = {v.name: v for v in two.views()}[lease.name]
                if seen.state == "disabled":
                    break
                await asyncio.sleep(0.01)
            assert (seen.state, seen.cause) == ("disabled", "billing")
            assert seen.until == clock() + BILLING_PROBE_DELAY
        finally:
            await one.close()
            await two.close()

    asyncio.run(scenario())
