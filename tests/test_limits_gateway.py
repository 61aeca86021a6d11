"""Limits, budgets and balances through the real gateway: exact under concurrency, on both backends."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from fakes.fake_anthropic import FakeAnthropic, Reply, message_json, text_stream_events
from support import BuzzProcess, RedisServer, free_port, raw_post, redis_url, wait_until

REDIS = redis_url(2)
ADMIN_TOKEN = "operator-token-for-tests"
BODY = b'{"model":"claude-haiku-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}'


def _process(tmp: Path, fake: FakeAnthropic, backend: str, **env: str) -> BuzzProcess:
    extra = dict(env)
    if backend == "redis":
        extra["BUZZ_REDIS_URL"] = REDIS  # tests use fresh keys and projects, so they share Redis safely
    process = BuzzProcess(tmp / "data", fake.url, env=extra)
    return process


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def quiet(fake_session: FakeAnthropic) -> Iterator[FakeAnthropic]:
    fake_session.clear()
    fake_session.drain_replies()
    yield fake_session
    fake_session.clear()
    fake_session.drain_replies()


async def _burst(urls: list[str], key: str, count: int, fake: FakeAnthropic) -> list[int]:
    """`count` requests at once. The upstream holds every answer it is asked for until every
    request has its status, so all of them are in flight together, however slow the machine."""
    hold = threading.Event()
    answer = message_json("claude-haiku-4-5", "x", {"input_tokens": 5, "output_tokens": 1})
    fake.enqueue(
        *(Reply(chunks=[answer], headers=[("content-type", "application/json")], gates=[hold]) for _ in range(count))
    )
    statuses: list[int] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one(i: int) -> None:
                async with session.post(
                    f"{urls[i % len(urls)]}/v1/messages", data=BODY, headers={"x-api-key": key}
                ) as response:
                    statuses.append(response.status)  # the status line comes before the held body
                    if len(statuses) == count:
                        hold.set()
                    await response.read()

            await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        hold.set()
        fake.drain_replies()  # the replies no admitted request took
    return statuses


def _cli(process: BuzzProcess, *args: str) -> str:
    result = process.cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_200_at_once_against_a_concurrency_of_50(tmp_path: Path, quiet: FakeAnthropic, backend: str) -> None:
    with _process(tmp_path, quiet, backend) as process:
        key = _cli(process, "keys", "create", "--project", f"burst-{uuid.uuid4().hex[:6]}", "--concurrency", "50")
        statuses = asyncio.run(_burst([process.url], key, 200, quiet))
        assert statuses.count(200) == 50
        assert statuses.count(429) == 150
        # Every slot came back when its request settled (its row is written first): the next 50
        # are admitted again.
        assert len(process.ledger(count=200)) == 200
        assert asyncio.run(_burst([process.url], key, 50, quiet)).count(200) == 50
        rows = process.ledger(count=250)
        assert sorted({r["status"] for r in rows}) == [200, 429]
        assert {r["error_type"] for r in rows if r["status"] == 429} == {"gateway_rate_limit_error"}


def test_two_processes_sharing_redis_enforce_one_limit(tmp_path: Path, quiet: FakeAnthropic) -> None:
    first = BuzzProcess(tmp_path / "a" / "data", quiet.url, env={"BUZZ_REDIS_URL": REDIS})
    second = BuzzProcess(tmp_path / "b" / "data", quiet.url, env={"BUZZ_REDIS_URL": REDIS})
    # Both processes must know the same key: share one database file between them.
    second.data_dir = first.data_dir
    second.env["BUZZ_DATA_DIR"] = str(first.data_dir)
    try:
        first.start()
        second.start()
        key = _cli(first, "keys", "create", "--project", f"shared-{uuid.uuid4().hex[:6]}", "--concurrency", "50")
        statuses = asyncio.run(_burst([first.url, second.url], key, 200, quiet))
        assert statuses.count(200) == 50
        assert statuses.count(429) == 150
    finally:
        first.stop()
        second.stop()


def test_a_rate_limit_rejection_says_when_to_retry(tmp_path: Path, quiet: FakeAnthropic, backend: str) -> None:
    # When a retry passes, to the microsecond, is the limiter's to show, on a clock the test
    # moves (tests/limits); here, what reaches the client.
    with _process(tmp_path, quiet, backend) as process:
        # Two requests a minute: the next one is 30 s away, so no test run is slow enough to see it.
        key = _cli(process, "keys", "create", "--project", f"rate-{uuid.uuid4().hex[:6]}", "--rpm", "2")
        auth = {"x-api-key": key}
        for _ in range(2):
            assert raw_post(process.url, "/v1/messages", BODY, auth)[0] == 200
        status, headers, body = raw_post(process.url, "/v1/messages", BODY, auth)
        assert status == 429
        received = {name.lower(): value for name, value in headers}
        document = json.loads(body)
        assert document["error"]["type"] == "gateway_rate_limit_error"
        assert "requests per minute" in document["error"]["message"]
        assert "capacity returns in" in document["error"]["message"]
        assert 1 <= int(received["retry-after"]) <= 30  # whole seconds, rounded up
        # A rejection carries the key's headroom too: nothing left, and full again within a minute.
        assert received["x-buzz-ratelimit-key-rpm-remaining"] == "0"
        assert 30 < int(received["x-buzz-ratelimit-key-rpm-reset"]) <= 60


def test_every_response_carries_the_keys_headroom(tmp_path: Path, quiet: FakeAnthropic, backend: str) -> None:
    process = _process(tmp_path, quiet, backend).start()
    project = f"room-{uuid.uuid4().hex[:6]}"
    try:
        _cli(process, "projects", "create", project, "--prepaid", "--rpm", "1000")
        _cli(process, "balance", "add", project, "1.00")
        limits = ["--rpm", "60", "--itpm", "6000", "--otpm", "600", "--concurrency", "4"]
        key = _cli(process, "keys", "create", "--project", project, *limits, "--daily-usd", "1", "--monthly-usd", "5")
        plain = _cli(process, "keys", "create", "--project", f"open-{uuid.uuid4().hex[:6]}")
        status, headers, _ = raw_post(process.url, "/v1/messages", BODY, {"x-api-key": key})
        assert status == 200
        received = {k.lower(): v for k, v in headers if k.lower().startswith("x-buzz-ratelimit-")}
        # Reserved: 1 request, about 4 body bytes a token of input, max_tokens (100) of output, and
        # the worst cost at Haiku 4.5's $1 / $5 per million tokens: every body byte a token.
        tokens = -(-len(BODY) // 4)
        worst = len(BODY) * 1_000 + 100 * 5_000
        assert received == {
            "x-buzz-ratelimit-key-rpm-remaining": "59",
            "x-buzz-ratelimit-key-rpm-reset": "1",
            "x-buzz-ratelimit-key-itpm-remaining": str(6000 - tokens),
            "x-buzz-ratelimit-key-itpm-reset": "1",  # 23 tokens at 100 a second
            "x-buzz-ratelimit-key-otpm-remaining": "500",
            "x-buzz-ratelimit-key-otpm-reset": "10",  # 100 tokens at 10 a second
            "x-buzz-ratelimit-key-concurrency-remaining": "3",
            "x-buzz-ratelimit-key-monthly-remaining": str(5_000_000_000 - worst),
            "x-buzz-ratelimit-key-daily-remaining": str(1_000_000_000 - worst),
            "x-buzz-ratelimit-project-balance-remaining": str(1_000_000_000 - worst),
        }
        # Without limits on the key or its project, buzz adds none.
        status, headers, _ = raw_post(process.url, "/v1/messages", BODY, {"x-api-key": plain})
        assert status == 200
        assert not [k for k, _ in headers if k.lower().startswith("x-buzz-ratelimit-")]
    finally:
        process.stop()


def test_prepaid_balance_ends_exactly_where_the_costs_say(tmp_path: Path, quiet: FakeAnthropic, backend: str) -> None:
    process = _process(tmp_path, quiet, backend).start()
    project = f"prepaid-{uuid.uuid4().hex[:6]}"
    try:
        _cli(process, "projects", "create", project, "--prepaid")
        assert _cli(process, "balance", "add", project, "1.00") == "1.00"
        key = _cli(process, "keys", "create", "--project", project)
        # Each answer costs 10,000 input + 1,000 output tokens of Haiku 4.5 ($1 / $5 per million):
        # $0.015. Before forwarding, buzz reserves the worst case it can know: a token of input for
        # every body byte and max_tokens of output. A request is admitted while that fits the
        # balance, and settled to its real cost afterwards. This fake reports more input than the
        # body could hold, so the balance ends below zero by that excess, and no more.
        usage = {"input_tokens": 10_000, "output_tokens": 1_000}
        quiet.enqueue(*(Reply(body=message_json("claude-haiku-4-5", "x", usage)) for _ in range(80)))
        body = b'{"model":"claude-haiku-4-5","max_tokens":1000,"messages":[]}'
        statuses = [raw_post(process.url, "/v1/messages", body, {"x-api-key": key})[0] for _ in range(80)]
        quiet.drain_replies()
        worst, cost, balance, admitted = len(body) * 1_000 + 1_000 * 5_000, 15_000_000, 1_000_000_000, 0
        while balance >= worst:
            balance, admitted = balance - cost, admitted + 1
        assert (admitted, balance) == (67, -5_000_000)  # below zero by less than one request's difference
        assert statuses == [200] * admitted + [402] * (80 - admitted)
        status, headers, data = raw_post(process.url, "/v1/messages", body, {"x-api-key": key})
        assert status == 402
        assert {k.lower(): v for k, v in headers}["x-should-retry"] == "false"
        document = json.loads(data)
        assert document["error"]["type"] == "gateway_billing_error"
        assert "prepaid balance" in document["error"]["message"]
        assert _cli(process, "balance", "add", project, "0") == "-0.005"
        # A top-up applies from the next request.
        assert _cli(process, "balance", "add", project, "0.10") == "0.095"
        quiet.enqueue(Reply(body=message_json("claude-haiku-4-5", "x", usage)))
        assert raw_post(process.url, "/v1/messages", body, {"x-api-key": key})[0] == 200
        rows = process.ledger(count=82)
        assert sum(r["cost_nanos"] for r in rows if r["status"] == 200) == (admitted + 1) * cost
        assert _cli(process, "balance", "add", project, "0") == "0.08"
    finally:
        process.stop()


def test_daily_spend_cap_is_402_and_names_the_limit(tmp_path: Path, quiet: FakeAnthropic, backend: str) -> None:
    with _process(tmp_path, quiet, backend) as process:
        key = _cli(process, "keys", "create", "--project", f"cap-{uuid.uuid4().hex[:6]}", "--daily-usd", "0.02")
        usage = {"input_tokens": 10_000, "output_tokens": 1_000}  # $0.015 of Haiku 4.5
        quiet.enqueue(Reply(body=message_json("claude-haiku-4-5", "x", usage)))
        body = b'{"model":"claude-haiku-4-5","max_tokens":1000,"messages":[]}'
        assert raw_post(process.url, "/v1/messages", body, {"x-api-key": key})[0] == 200
        # $0.015 spent + a worst case of ~$0.005 no longer fits under $0.02.
        status, headers, data = raw_post(process.url, "/v1/messages", body, {"x-api-key": key})
        quiet.drain_replies()
        assert status == 402
        error = json.loads(data)["error"]
        assert error["type"] == "gateway_billing_error" and "daily spend" in error["message"]
        received = {k.lower(): v for k, v in headers}
        assert received["x-should-retry"] == "false"
        assert 0 < int(received["retry-after"]) <= 86400  # when the UTC day turns


def test_allow_list_and_expiry_are_403(tmp_path: Path, quiet: FakeAnthropic) -> None:
    with _process(tmp_path, quiet, "memory") as process:
        key = _cli(process, "keys", "create", "--project", "p", "--models", "claude-haiku-*")
        assert raw_post(process.url, "/v1/messages", BODY, {"x-api-key": key})[0] == 200
        opus = BODY.replace(b"claude-haiku-4-5", b"claude-opus-4-8")
        status, _, data = raw_post(process.url, "/v1/messages", opus, {"x-api-key": key})
        assert status == 403
        assert json.loads(data)["error"]["type"] == "gateway_permission_error"
        old = _cli(process, "keys", "create", "--project", "p", "--expires", "2020-01-01")
        status, _, data = raw_post(process.url, "/v1/messages", BODY, {"x-api-key": old})
        assert status == 403 and "expired" in json.loads(data)["error"]["message"]
        # A change applies from the next request.
        key_id = key.split("-")[1]
        _cli(process, "keys", "update", key_id, "--models", "none")
        assert raw_post(process.url, "/v1/messages", opus, {"x-api-key": key})[0] == 200


def test_every_path_settles_its_reservation(tmp_path: Path, quiet: FakeAnthropic, backend: str) -> None:
    with _process(tmp_path, quiet, backend, BUZZ_READ_TIMEOUT="0.5") as process:
        key = _cli(process, "keys", "create", "--project", f"settle-{uuid.uuid4().hex[:6]}", "--concurrency", "1")
        auth = {"x-api-key": key}
        quiet.enqueue(Reply(status=529, body=b'{"type":"error","error":{"type":"overloaded_error","message":"x"}}'))
        quiet.enqueue(Reply(reset_before_headers=True), Reply(hang=True))
        for expected in (529, 502, 504):
            status, headers, _ = raw_post(process.url, "/v1/messages", BODY, auth)
            assert status == expected
            # Relayed or buzz's own, every answer to an admitted request carries its headroom.
            assert {k.lower(): v for k, v in headers}["x-buzz-ratelimit-key-concurrency-remaining"] == "0"
        # A client that leaves in the middle of a stream.
        events = text_stream_events("claude-haiku-4-5", ["x"] * 30, {"input_tokens": 5, "output_tokens": 1}, {})
        quiet.enqueue(Reply(chunks=events, delays=[0.0] * 3 + [0.2] * (len(events) - 3)))
        host, port = process.url.removeprefix("http://").split(":")
        stream_body = BODY.replace(b'"max_tokens":100', b'"max_tokens":100,"stream":true')
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode() + b"\r\n"
                b"content-length: " + str(len(stream_body)).encode() + b"\r\n\r\n" + stream_body
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert wait_until(lambda: len(process.ledger()) >= 4, timeout=5)
        # With one slot, each of these would have locked the key out had its slot not come back.
        status, headers, _ = raw_post(process.url, "/v1/messages", BODY, auth)
        assert status == 200
        received = {k.lower(): v for k, v in headers}
        assert received["x-buzz-ratelimit-key-concurrency-remaining"] == "0"
        rows = process.ledger(count=5)
        assert [r["status"] for r in rows] == [529, 502, 504, 200, 200]
        assert rows[3]["error_type"] == "client_disconnected"


def test_unreachable_redis_is_503_or_fail_open(tmp_path: Path, quiet: FakeAnthropic) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with BuzzProcess(tmp_path / "data", quiet.url, env={"BUZZ_REDIS_URL": dead}) as process:
        key = _cli(process, "keys", "create", "--project", "p", "--rpm", "10")
        status, _, data = raw_post(process.url, "/v1/messages", BODY, {"x-api-key": key})
        assert status == 503
        assert json.loads(data)["error"]["type"] == "gateway_unavailable_error"
    with BuzzProcess(
        tmp_path / "open" / "data", quiet.url, env={"BUZZ_REDIS_URL": dead, "BUZZ_LIMITS_FAIL_OPEN": "true"}
    ) as open_process:
        key = _cli(open_process, "keys", "create", "--project", "p", "--rpm", "10")
        assert raw_post(open_process.url, "/v1/messages", BODY, {"x-api-key": key})[0] == 200


def _counters(process: BuzzProcess) -> dict[str, int]:
    request = urllib.request.Request(
        f"{process.url}/admin/api/counters", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        counts: dict[str, int] = json.loads(response.read())
        return counts


def test_a_settlement_lost_to_an_outage_is_delivered_when_redis_is_back(tmp_path: Path, quiet: FakeAnthropic) -> None:
    # Redis of this test's own, stopped (SIGSTOP) while a request is in flight and resumed later.
    with RedisServer(tmp_path / "redis") as server:
        env = {"BUZZ_REDIS_URL": server.url, "BUZZ_ADMIN_TOKEN": ADMIN_TOKEN}
        with BuzzProcess(tmp_path / "data", quiet.url, env=env) as process:
            key = _cli(process, "keys", "create", "--project", "outage", "--concurrency", "1")
            quiet.enqueue(Reply(hang=True))
            host, port = process.url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(
                    b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode() + b"\r\n"
                    b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
                )
                assert wait_until(lambda: len(quiet.requests) == 1, timeout=10)  # admitted and forwarded
                server.pause()
            try:
                # The client left: buzz settles, Redis does not answer, the settlement is kept.
                assert wait_until(lambda: _counters(process).get("limiter_settle_failed") == 1, timeout=30)
            finally:
                server.resume()
            assert wait_until(lambda: _counters(process).get("limiter_settle_retried_ok") == 1, timeout=30)
            # The slot came back with the settlement, not a lease later.
            status, headers, _ = raw_post(process.url, "/v1/messages", BODY, {"x-api-key": key})
            assert status == 200
            assert {k.lower(): v for k, v in headers}["x-buzz-ratelimit-key-concurrency-remaining"] == "0"
            rows = process.ledger(count=2)
            assert [(r["status"], r["error_type"]) for r in rows] == [(499, "client_disconnected"), (200, None)]
