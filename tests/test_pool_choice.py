"""How a pool reads an answer's signals, and how it chooses among its credentials, with a clock the
test moves: weights, requests in flight, room, holds and their recovery."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from buzz.config import Config, CredentialConfig, ProviderConfig
from buzz.counters import Counters
from buzz.errors import GatewayError
from buzz.pools.memory import MemoryBoard
from buzz.pools.pool import BILLING_PROBE_DELAY, FIRST_BACKOFF, Pools
from buzz.pools.signals import cause_of, retry_after, room
from support import Clock

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "error_type", "cause"),
    [
        (400, "invalid_request_error", None),
        (404, "not_found_error", None),
        (413, None, None),
        (500, "api_error", None),
        (200, None, None),
        (401, "authentication_error", "auth"),
        (403, "permission_error", "auth"),
        (402, "billing_error", "billing"),
        (429, "insufficient_quota", "billing"),
        (429, "rate_limit_error", "rate_limited"),
        (429, None, "rate_limited"),
        (529, "overloaded_error", "overloaded"),
        (503, None, "overloaded"),
        (200, "overloaded_error", "overloaded"),
    ],
)
def test_only_signals_about_the_credential_cool_it(status: int, error_type: str | None, cause: str | None) -> None:
    assert cause_of(status, error_type) == cause


def test_retry_after_in_seconds_milliseconds_or_a_date() -> None:
    assert retry_after({"retry-after": "7"}, NOW) == 7
    assert retry_after({"retry-after": "1.5"}, NOW) == 1.5
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}, NOW) == 0.25
    date = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    assert retry_after({"retry-after": date}, NOW) == 30
    assert retry_after({"retry-after": "soon"}, NOW) is None
    assert retry_after({"retry-after": "-3"}, NOW) is None
    assert retry_after({}, NOW) is None


def test_room_from_anthropic_headers_takes_the_tightest_limit() -> None:
    reset = datetime.fromtimestamp(NOW + 20, UTC).isoformat().replace("+00:00", "Z")
    later = datetime.fromtimestamp(NOW + 50, UTC).isoformat().replace("+00:00", "Z")
    headers = {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "900",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": later,
    }
    figures = room(headers, NOW)
    assert figures is not None
    assert (figures.left, figures.reset, figures.exhausted_until) == (0.0, NOW + 50, NOW + 50)


def test_room_from_openai_headers_reads_go_durations() -> None:
    headers = {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-limit-tokens": "160000",
        "x-ratelimit-remaining-tokens": "40000",
        "x-ratelimit-reset-tokens": "1m30.5s",
    }
    figures = room(headers, NOW)
    assert figures is not None
    assert (figures.left, figures.reset, figures.exhausted_until) == (0.25, NOW + 90.5, None)
    assert room({"x-ratelimit-limit-tokens": "10", "x-ratelimit-remaining-tokens": "5"}, NOW) is None  # no reset
    assert room({**headers, "x-ratelimit-reset-tokens": "soon", "x-ratelimit-reset-requests": "1x"}, NOW) is None


def pools(clock: Clock, *weights: int, board: MemoryBoard | None = None) -> Pools:
    credentials = tuple(
        CredentialConfig(f"c{number}", f"sk-{number}", "http://upstream.invalid", weight)
        for number, weight in enumerate(weights)
    )
    config = Config(providers={"anthropic": ProviderConfig("http://upstream.invalid", credentials)})

    async def probe(provider: str, credential: CredentialConfig) -> int:
        return 200

    return Pools(config, board or MemoryBoard(clock), probe, Counters(), clock)


def test_weights_share_requests_exactly_when_nothing_is_in_flight() -> None:
    pool = pools(Clock(NOW), 3, 1, 2)
    chosen = []
    for _ in range(60):
        lease = pool.acquire("anthropic")
        chosen.append(lease.name)
        lease.release()
    assert Counter(chosen) == {"c0": 30, "c1": 10, "c2": 20}
    assert chosen[:6].count("c0") == 3  # smooth: interleaved, not in runs


def test_the_credential_with_fewer_requests_in_flight_is_preferred() -> None:
    pool = pools(Clock(NOW), 1, 1)
    busy = [pool.acquire("anthropic") for _ in range(2)]  # one on each
    more = pool.acquire("anthropic")  # a third: c0 or c1 now has two
    loaded = more.name
    idle = "c1" if loaded == "c0" else "c0"
    for lease in busy:
        if lease.name == idle:
            lease.release()  # the other one is now nearly free
    chosen = Counter()
    for _ in range(20):
        lease = pool.acquire("anthropic")
        chosen[lease.name] += 1
        lease.release()
    assert chosen[idle] > chosen[loaded]


def test_a_hold_ends_on_time_and_an_overload_backs_off_longer_while_it_repeats() -> None:
    clock = Clock(NOW)
    pool = pools(clock, 1, 1)

    async def scenario() -> None:
        lease = pool.acquire("anthropic")
        lease.answered(529, {})
        lease.release()
        held = lease.name
        view = {v.name: v for v in pool.views()}[held]
        assert (view.state, view.cause, view.until) == ("held", "overloaded", NOW + FIRST_BACKOFF)
        assert all(pool.acquire("anthropic").name != held for _ in range(5))
        clock.now += FIRST_BACKOFF
        assert {v.name: v for v in pool.views()}[held].state == "healthy"
        again = next(lease for lease in (pool.acquire("anthropic") for _ in range(3)) if lease.name == held)
        again.answered(529, {})
        assert {v.name: v for v in pool.views()}[held].until == clock.now + 2 * FIRST_BACKOFF

    asyncio.run(scenario())


def test_every_credential_held_is_a_503_with_the_soonest_recovery() -> None:
    clock = Clock(NOW)
    pool = pools(clock, 1, 1)

    async def scenario() -> None:
        for wait in ("40", "15"):
            lease = pool.acquire("anthropic")
            lease.answered(429, {"retry-after": wait})
            lease.release()
        with pytest.raises(GatewayError) as raised:
            pool.acquire("anthropic")
        assert raised.value.kind.type == "gateway_unavailable_error"
        assert raised.value.headers == [(b"retry-after", b"15")]
        clock.now += 15
        assert pool.acquire("anthropic").name in ("c0", "c1")

    asyncio.run(scenario())


def test_an_answer_to_a_request_sent_before_a_hold_does_not_lift_it() -> None:
    clock = Clock(NOW)
    single = pools(clock, 1)

    async def scenario() -> None:
        early = single.acquire("anthropic")  # a long request, sent first
        clock.now += 1
        limited = single.acquire("anthropic")
        limited.answered(429, {"retry-after": "60"})
        limited.release()
        clock.now += 1
        early.answered(200, {})  # it was sent before the 429: it says nothing of now
        early.release()
        assert single.views()[0].state == "held"
        later = single.acquire("anthropic")  # a pool of one still sends; this one came after the hold
        later.answered(200, {})
        later.release()
        assert single.views()[0].state == "healthy"

    asyncio.run(scenario())


def test_in_a_pool_that_chooses_only_a_probe_lifts_a_disable() -> None:
    clock = Clock(NOW)
    pool = pools(clock, 1, 1)

    async def scenario() -> None:
        lease = pool.acquire("anthropic")
        lease.answered(402, {})
        lease.release()
        disabled = lease.name
        clock.now += 1
        bound = pool.acquire("anthropic", bound=True)  # a model list, say, with the first credential
        assert bound.name == "c0"
        bound.answered(200, {})
        bound.release()
        view = {v.name: v for v in pool.views()}[disabled]
        assert (view.state, view.cause) == ("disabled", "billing")
        assert view.until == NOW + BILLING_PROBE_DELAY  # billing is probed late: a model list proves little

    asyncio.run(scenario())


def test_a_burst_of_overloads_is_one_short_backoff() -> None:
    clock = Clock(NOW)
    pool = pools(clock, 1, 1)

    async def scenario() -> None:
        leases = [pool.acquire("anthropic") for _ in range(6)]  # three in flight on each
        for lease in leases:
            lease.answered(529, {})
            lease.release()
        for view in pool.views():
            assert (view.state, view.until, view.cooldowns["overloaded"]) == ("held", NOW + FIRST_BACKOFF, 1)
        assert [v.in_flight for v in pool.views()] == [0, 0]

    asyncio.run(scenario())


def test_a_refused_connection_is_held_here_only() -> None:
    clock = Clock(NOW)
    board = MemoryBoard(clock)
    pool = pools(clock, 1, 1, board=board)

    async def scenario() -> None:
        lease = pool.acquire("anthropic")
        lease.unreachable()
        lease.release()
        other = pool.acquire("anthropic")
        other.answered(429, {"retry-after": "9"})
        other.release()
        await asyncio.sleep(0)  # the shares run as tasks of their own
        await asyncio.sleep(0)
        assert {name for _, name in await board.read()} == {other.name}  # the 429 only

    asyncio.run(scenario())


def test_a_429_on_an_account_bound_route_holds_nothing_but_a_refused_key_disables() -> None:
    clock = Clock(NOW)
    pool = pools(clock, 1, 1)

    async def scenario() -> None:
        for status in (429, 529):
            lease = pool.acquire("anthropic", bound=True)  # a batch or a file: the first credential
            lease.answered(status, {"retry-after": "30"})
            lease.release()
        assert [v.state for v in pool.views()] == ["healthy", "healthy"]
        lease = pool.acquire("anthropic", bound=True)
        lease.answered(401, {})
        lease.release()
        assert [v.state for v in pool.views()] == ["disabled", "healthy"]

    asyncio.run(scenario())
