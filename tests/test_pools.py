"""Credential pools, end to end: two or three fake Anthropic upstreams behind one vendor's pool,
and real gateways in front of them.

Requests are spread by weight; a credential is held by cause (a 429 for its retry-after, a 529
for a short backoff, a 401 until a probe succeeds); a refused connection is the one failure that
moves a request to another credential; nothing is ever sent twice; holds are shared between
processes through Redis. What the client sees is always the upstream's own answer, byte for byte,
or buzz's 503 when every credential is out of rotation.
"""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from fakes.fake_anthropic import FakeAnthropic, Reply, error_reply, midstream_error_events
from fakes.fake_openai import FakeOpenAI
from fakes.openai_replies import openai_error_reply
from support import BuzzProcess, RedisServer, free_port, raw_post, redis_url, wait_until

BODY = b'{"model":"claude-sonnet-4-6","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
ADMIN = "admin-token-for-pool-tests"
REDIS_DB = 9


def pool_config(path: Path, credentials: list[tuple[str, str, int]], probe_interval: float = 30.0) -> Path:
    """A config file with one anthropic pool: (name, base URL, weight) each, keys `sk-ant-<name>`."""
    lines = [f"[upstreams]\nprobe_interval = {probe_interval}\n"]
    for name, url, weight in credentials:
        lines.append(
            f'[[providers.anthropic.credentials]]\nname = "{name}"\napi_key = "sk-ant-{name}"\n'
            f'base_url = "{url}"\nweight = {weight}\n'
        )
    path.write_text("\n".join(lines))
    return path


def gateway(tmp_path: Path, config: Path, name: str = "buzz", **env: str) -> BuzzProcess:
    settings = {"BUZZ_CONFIG": str(config), "ANTHROPIC_API_KEY": "", "BUZZ_ADMIN_TOKEN": ADMIN, **env}
    return BuzzProcess(tmp_path / name / "data", "http://unused.invalid", settings)  # started by `with`


def upstreams(buzz: BuzzProcess) -> dict[str, dict[str, Any]]:
    request = urllib.request.Request(f"{buzz.url}/admin/api/upstreams", headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return {entry["name"]: entry for entry in json.load(response)["data"]}


def post(buzz: BuzzProcess, key: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    status, received, body = raw_post(buzz.url, "/v1/messages", BODY, {"x-api-key": key, **(headers or {})})
    return status, {name.lower(): value for name, value in received}, body


def seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.fixture
def fakes() -> Iterator[tuple[FakeAnthropic, FakeAnthropic, FakeAnthropic]]:
    with ExitStack() as stack:
        yield (
            stack.enter_context(FakeAnthropic()),
            stack.enter_context(FakeAnthropic()),
            stack.enter_context(FakeAnthropic()),
        )


def keys_seen(fake: FakeAnthropic) -> list[str | None]:
    return [request.header("x-api-key") for request in fake.requests]


def test_requests_are_spread_by_weight_and_rows_name_the_credential(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 2), ("acct-b", b.url, 1)])
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        statuses = [post(buzz, key)[0] for _ in range(30)]
        assert statuses == [200] * 30
        # One at a time, nothing in flight: exactly by weight, each with its own upstream key.
        assert keys_seen(a) == ["sk-ant-acct-a"] * 20
        assert keys_seen(b) == ["sk-ant-acct-b"] * 10
        rows = buzz.ledger(count=30)
        assert Counter(row["credential"] for row in rows) == {"acct-a": 20, "acct-b": 10}
        # The name, never the key: no column of the ledger holds a credential's secret.
        assert not any("sk-ant-acct" in str(value) for row in rows for value in row.values())
        assert {entry["state"] for entry in upstreams(buzz).values()} == {"healthy"}


def test_a_429_holds_its_credential_for_its_retry_after_while_the_other_serves(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    refusal = error_reply(429, "rate_limit_error", "slow down", retry_after=2)
    a.enqueue(refusal)
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        answers = [post(buzz, key) for _ in range(2)]  # one to each: acct-a answers the 429
        limited = [answer for answer in answers if answer[0] == 429]
        assert len(limited) == 1
        # The client saw the upstream's 429 untouched: its body and its headers.
        _, headers, body = limited[0]
        assert body == refusal.body
        assert headers["retry-after"] == "2"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert "x-buzz-error-source" not in headers

        state = upstreams(buzz)
        held = state["acct-a"]
        assert (held["state"], held["cause"], held["cooldowns"]["rate_limited"]) == ("held", "rate_limited", 1)
        assert 1.0 <= seconds(held["until"]) - seconds(held["since"]) <= 3.0  # 2 s, to the second
        assert state["acct-b"]["state"] == "healthy"

        # While held, acct-a gets nothing: every request goes to acct-b, and succeeds. (A request
        # is known to have come while held when acct-a is still held after its answer.)
        before = len(a.requests)
        while True:
            assert post(buzz, key)[0] == 200
            if upstreams(buzz)["acct-a"]["state"] != "held":
                break
            assert len(a.requests) == before
        # Then it is back in rotation without anyone's help.
        assert [post(buzz, key)[0] for _ in range(4)] == [200] * 4
        assert len(a.requests) > before


def test_a_401_disables_until_a_probe_succeeds(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)], probe_interval=0.2)
    revoked = error_reply(401, "authentication_error", "invalid x-api-key")
    # The request's answer, then the first two probes' (GET /v1/models with the same key): still refused.
    a.enqueue(revoked, revoked, revoked)
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        answers = [post(buzz, key) for _ in range(2)]
        assert sorted(status for status, _, _ in answers) == [200, 401]
        assert next(body for status, _, body in answers if status == 401) == revoked.body
        # Probed with a model list until one is accepted, then back in rotation.
        assert wait_until(lambda: upstreams(buzz)["acct-a"]["state"] == "healthy", timeout=20)
        probes = [r for r in a.requests if r.method == "GET"]
        assert len(probes) >= 3
        assert {(r.path, r.header("x-api-key")) for r in probes} == {("/v1/models", "sk-ant-acct-a")}
        assert upstreams(buzz)["acct-a"]["cooldowns"]["auth"] == 1
        messages_before = len([r for r in a.requests if r.method == "POST"])
        assert [post(buzz, key)[0] for _ in range(4)] == [200] * 4
        assert len([r for r in a.requests if r.method == "POST"]) > messages_before


def test_a_disabled_credential_gets_nothing_while_its_probes_fail(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    # A refused key, then its first probe refused too; the next probe is 30 s away.
    a.enqueue(error_reply(403, "permission_error", "key revoked"), error_reply(403, "permission_error", "no"))
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        assert sorted(post(buzz, key)[0] for _ in range(2)) == [200, 403]
        assert wait_until(lambda: len(a.requests) == 2)  # the probe was made, and refused
        entry = upstreams(buzz)["acct-a"]
        assert (entry["state"], entry["cause"]) == ("disabled", "auth")
        assert [post(buzz, key)[0] for _ in range(6)] == [200] * 6
        assert len(a.requests) == 2


def test_a_clients_own_400_cools_nothing(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    a.enqueue(error_reply(400, "invalid_request_error", "messages: field required"))
    b.enqueue(error_reply(404, "not_found_error", "model: not found"))
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        assert sorted(post(buzz, key)[0] for _ in range(2)) == [400, 404]
        state = upstreams(buzz)
        assert [entry["state"] for entry in state.values()] == ["healthy", "healthy"]
        assert all(set(entry["cooldowns"].values()) == {0} for entry in state.values())
        assert [post(buzz, key)[0] for _ in range(4)] == [200] * 4
        assert (len(a.requests), len(b.requests)) == (3, 3)


def test_a_refused_connection_moves_on_and_the_client_gets_200(tmp_path: Path, fakes: Any) -> None:
    a, _, _ = fakes
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = pool_config(tmp_path / "buzz.toml", [("gone", closed, 1), ("acct-a", a.url, 1)])
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        assert [post(buzz, key)[0] for _ in range(4)] == [200] * 4
        assert len(a.requests) == 4  # each once: the refused attempt sent nothing
        assert upstreams(buzz)["gone"]["cooldowns"]["unreachable"] >= 1
        rows = buzz.ledger(count=4)
        assert {row["credential"] for row in rows} == {"acct-a"}


def test_every_credential_unreachable_is_a_502_after_one_try_each(tmp_path: Path) -> None:
    config = pool_config(
        tmp_path / "buzz.toml",
        [("one", f"http://127.0.0.1:{free_port()}", 1), ("two", f"http://127.0.0.1:{free_port()}", 1)],
    )
    with gateway(tmp_path, config) as buzz:
        status, _, body = post(buzz, buzz.create_key())
        assert status == 502
        assert json.loads(body)["error"]["type"] == "gateway_upstream_error"
        assert [entry["cooldowns"]["unreachable"] for entry in upstreams(buzz).values()] == [1, 1]


def test_a_reset_after_the_request_was_sent_is_never_sent_again(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        status, _, body = post(buzz, key, {"x-fake-scenario": "reset"})
        assert status == 502
        assert json.loads(body)["error"]["type"] == "gateway_upstream_error"
        # Exactly one upstream received it, once; the other never saw it.
        assert sorted((len(a.requests), len(b.requests))) == [0, 1]
        # A reset says nothing about the credential: nothing is cooled.
        assert {entry["state"] for entry in upstreams(buzz).values()} == {"healthy"}


def test_an_overload_gets_a_short_backoff(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    a.enqueue(error_reply(529, "overloaded_error", "Overloaded"))
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        assert sorted(post(buzz, key)[0] for _ in range(2)) == [200, 529]
        entry = upstreams(buzz)["acct-a"]
        assert entry["cooldowns"]["overloaded"] == 1
        if entry["state"] == "held":  # a backoff of 1 s may be over already
            assert entry["cause"] == "overloaded"
            assert seconds(entry["until"]) - seconds(entry["since"]) <= 2.0  # 1 s, to the second


def test_an_overload_in_the_middle_of_a_stream_backs_off_too(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    events = midstream_error_events("claude-sonnet-4-6", ["partial"], {"input_tokens": 4, "output_tokens": 1})
    a.enqueue(Reply(chunks=events))
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        assert [post(buzz, key)[0] for _ in range(2)] == [200, 200]
        assert upstreams(buzz)["acct-a"]["cooldowns"]["overloaded"] == 1


def test_every_credential_held_is_a_503_with_the_soonest_recovery(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    a.enqueue(error_reply(429, "rate_limit_error", "slow down", retry_after=40))
    b.enqueue(error_reply(429, "rate_limit_error", "slow down", retry_after=20))
    with gateway(tmp_path, config) as buzz:
        client = anthropic.Anthropic(api_key=buzz.create_key(), base_url=buzz.url, max_retries=0)
        for _ in range(2):
            with pytest.raises(anthropic.RateLimitError):
                client.messages.create(
                    model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "x"}]
                )
        with pytest.raises(anthropic.APIStatusError) as raised:
            client.messages.create(
                model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "x"}]
            )
        assert raised.value.status_code == 503
        assert raised.value.body["error"]["type"] == "gateway_unavailable_error"  # type: ignore[index]
        assert 18 <= int(raised.value.response.headers["retry-after"]) <= 20
        assert len(a.requests) + len(b.requests) == 2
        rows = buzz.ledger(count=3)
        refused = [row for row in rows if row["status"] == 503]
        assert len(refused) == 1 and refused[0]["credential"] is None


def test_the_rate_limit_headers_steer_requests_to_the_credential_with_room(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    spent = [
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2099-01-01T00:00:00Z"),
    ]
    roomy = [
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "49"),
        ("anthropic-ratelimit-requests-reset", "2099-01-01T00:00:00Z"),
    ]
    a.enqueue(
        Reply(headers=spent, body=b'{"type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":1}}')
    )
    b.enqueue(
        Reply(headers=roomy, body=b'{"type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":1}}')
    )
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        assert [post(buzz, key)[0] for _ in range(2)] == [200, 200]
        state = upstreams(buzz)
        assert (state["acct-a"]["headroom"], state["acct-b"]["headroom"]) == (0.0, 0.98)
        assert state["acct-a"]["state"] == "healthy"  # not a hold: only a preference
        before = len(a.requests)
        assert [post(buzz, key)[0] for _ in range(6)] == [200] * 6
        assert len(a.requests) == before


@pytest.fixture
def shared_redis() -> Iterator[str]:
    url = redis_url(REDIS_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def test_two_processes_share_holds_through_redis(tmp_path: Path, fakes: Any, shared_redis: str) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    env = {"BUZZ_REDIS_URL": shared_redis}
    a.enqueue(error_reply(429, "rate_limit_error", "slow down", retry_after=60))
    with gateway(tmp_path, config, "one", **env) as one, gateway(tmp_path, config, "two", **env) as two:
        key = one.create_key()
        two_key = two.create_key()
        assert sorted(post(one, key)[0] for _ in range(2)) == [200, 429]
        # The other process learns of the hold from Redis, and keeps its deadline.
        assert wait_until(lambda: upstreams(two)["acct-a"]["state"] == "held", timeout=10)
        assert upstreams(two)["acct-a"]["until"] == upstreams(one)["acct-a"]["until"]
        before = len(a.requests)
        assert [post(two, two_key)[0] for _ in range(4)] == [200] * 4
        assert len(a.requests) == before
        stored = redis.Redis.from_url(shared_redis).hget("buzz:holds", "anthropic\tacct-a")
        assert stored is not None
        until, cause, since = stored.decode().split("|")
        assert cause == "rate_limited"
        assert float(until) - float(since) == pytest.approx(60, abs=0.5)


def test_a_single_credential_keeps_serving_and_its_next_success_restores_it(tmp_path: Path, fakes: Any) -> None:
    a, _, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("only", a.url, 1)])
    a.enqueue(error_reply(429, "rate_limit_error", "slow down", retry_after=30))
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        assert post(buzz, key)[0] == 429
        assert upstreams(buzz)["only"]["state"] == "held"
        # Nowhere else to go: the request goes to the vendor, whose answer the client gets.
        assert post(buzz, key)[0] == 200
        assert upstreams(buzz)["only"]["state"] == "healthy"
        assert len(a.requests) == 2


def test_an_openai_account_out_of_quota_is_disabled_for_billing(tmp_path: Path) -> None:
    with FakeOpenAI() as a, FakeOpenAI() as b:
        config = tmp_path / "buzz.toml"
        config.write_text(
            "".join(
                f'[[providers.openai.credentials]]\nname = "{name}"\napi_key = "sk-{name}"\n'
                f'base_url = "{fake.url}/v1"\n'
                for name, fake in (("org-a", a), ("org-b", b))
            )
        )
        quota = openai_error_reply(429, "insufficient_quota", "You exceeded your current quota", "insufficient_quota")
        a.enqueue(quota)
        with gateway(tmp_path, config, OPENAI_API_KEY="") as buzz:
            client = openai.OpenAI(api_key=buzz.create_key(), base_url=f"{buzz.url}/v1", max_retries=0)
            outcomes = []
            for _ in range(2):
                try:
                    client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}])
                    outcomes.append(200)
                except openai.RateLimitError as error:
                    assert error.code == "insufficient_quota"  # the vendor's own error, untouched
                    outcomes.append(429)
            assert sorted(outcomes) == [200, 429]
            # Its body said the account cannot pay: disabled, not merely held for a retry-after.
            entry = upstreams(buzz)["org-a"]
            assert (entry["state"], entry["cause"]) == ("disabled", "billing")
            before = len(a.requests)
            for _ in range(4):
                client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}])
            assert len(a.requests) == before
            assert [r.header("authorization") for r in b.requests] == ["Bearer sk-org-b"] * 5


def test_holds_stay_local_while_redis_is_away(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    with RedisServer(tmp_path / "redis") as server, gateway(tmp_path, config, BUZZ_REDIS_URL=server.url) as buzz:
        key = buzz.create_key()
        server.stop()
        a.enqueue(error_reply(429, "rate_limit_error", "slow down", retry_after=60))
        assert sorted(post(buzz, key)[0] for _ in range(2)) == [200, 429]
        assert upstreams(buzz)["acct-a"]["state"] == "held"  # held here, though not shared
        assert wait_until(lambda: counters(buzz).get("credential_hold_share_failed", 0) >= 1)
        before = len(a.requests)
        assert [post(buzz, key)[0] for _ in range(4)] == [200] * 4
        assert len(a.requests) == before
        # Back: the next hold is shared again.
        server.start()
        b.enqueue(error_reply(429, "rate_limit_error", "slow down", retry_after=60))
        assert post(buzz, key)[0] == 429
        shared = redis.Redis.from_url(server.url)
        assert wait_until(lambda: shared.hget("buzz:holds", "anthropic\tacct-b") is not None)
        shared.close()


def counters(buzz: BuzzProcess) -> dict[str, int]:
    request = urllib.request.Request(f"{buzz.url}/admin/api/counters", headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.load(response))


def test_metrics_show_each_credentials_state_holds_and_requests(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    port = free_port()
    a.enqueue(error_reply(429, "rate_limit_error", "slow down", retry_after=60))
    with gateway(tmp_path, config, BUZZ_METRICS_PORT=str(port)) as buzz:
        key = buzz.create_key()
        assert sorted(post(buzz, key)[0] for _ in range(6)) == [200] * 5 + [429]

        def sampled() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
            samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
            return samples

        def state(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, value: str) -> float:
            labels = (("credential", name), ("provider", "anthropic"), ("state", value))
            return samples.get("buzz_upstream_credential_state", {}).get(labels, -1.0)

        # Sampled every second: wait for the sample that saw the hold.
        assert wait_until(lambda: state(sampled(), "acct-a", "held") == 1.0, timeout=10)
        samples = sampled()
        assert (state(samples, "acct-a", "healthy"), state(samples, "acct-b", "healthy")) == (0.0, 1.0)
        cooldowns = samples["buzz_upstream_cooldowns_total"]
        assert cooldowns[(("cause", "rate_limited"), ("credential", "acct-a"), ("provider", "anthropic"))] == 1.0
        assert cooldowns[(("cause", "rate_limited"), ("credential", "acct-b"), ("provider", "anthropic"))] == 0.0
        # Requests by credential, as the ledger has them.
        rows = buzz.ledger(count=6)
        by_credential = Counter((row["credential"], f"{row['status'] // 100}xx") for row in rows)
        upstream = {
            (dict(labels)["credential"], dict(labels)["status_class"]): value
            for labels, value in samples["buzz_upstream_requests_total"].items()
        }
        assert upstream == {pair: float(count) for pair, count in by_credential.items()}
        assert upstream[("acct-a", "4xx")] == 1.0


def test_the_model_list_goes_with_the_first_credentials_own_key_and_address(tmp_path: Path) -> None:
    with FakeOpenAI() as first, FakeOpenAI() as second:
        config = tmp_path / "buzz.toml"
        config.write_text(
            # The vendor's own address is unreachable here: a key must never be sent there.
            '[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\n'
            + "".join(
                f'\n[[providers.openai.credentials]]\nname = "{name}"\napi_key = "sk-{name}"\n'
                f'base_url = "{fake.url}/v1"\n'
                for name, fake in (("org-a", first), ("org-b", second))
            )
        )
        with gateway(tmp_path, config, OPENAI_API_KEY="") as buzz:
            client = openai.OpenAI(api_key=buzz.create_key(), base_url=f"{buzz.url}/v1", max_retries=0)
            listed = [model.id for model in client.models.list()]
            assert listed
            assert [(r.method, r.path, r.header("authorization")) for r in first.requests] == [
                ("GET", "/v1/models", "Bearer sk-org-a")
            ]
            assert second.requests == []
            assert "x-buzz-models-fallback" not in client.models.with_raw_response.list().headers


def test_a_client_that_hangs_up_cools_nothing(tmp_path: Path, fakes: Any) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    with gateway(tmp_path, config) as buzz:
        key = buzz.create_key()
        host, port = buzz.url.removeprefix("http://").split(":")
        for _ in range(2):  # one on each credential: the upstream never answers, the client leaves
            conn = http.client.HTTPConnection(host, int(port), timeout=0.5)
            with pytest.raises(TimeoutError):
                conn.request("POST", "/v1/messages", BODY, {"x-api-key": key, "x-fake-scenario": "hang"})
                conn.getresponse()
            conn.close()
        rows = buzz.ledger(count=2)
        assert [(row["status"], row["error_type"]) for row in rows] == [(499, "client_disconnected")] * 2
        state = upstreams(buzz)
        assert {entry["state"] for entry in state.values()} == {"healthy"}
        assert all(set(entry["cooldowns"].values()) == {0} for entry in state.values())
        assert all(entry["in_flight"] == 0 for entry in state.values())


def test_the_operator_puts_a_credential_back_in_rotation(tmp_path: Path, fakes: Any, shared_redis: str) -> None:
    a, b, _ = fakes
    config = pool_config(tmp_path / "buzz.toml", [("acct-a", a.url, 1), ("acct-b", b.url, 1)])
    env = {"BUZZ_REDIS_URL": shared_redis}
    a.enqueue(error_reply(402, "billing_error", "top up your account"))
    with gateway(tmp_path, config, "one", **env) as one, gateway(tmp_path, config, "two", **env) as two:
        key = one.create_key()
        assert sorted(post(one, key)[0] for _ in range(2)) == [200, 402]
        assert wait_until(lambda: upstreams(two)["acct-a"]["state"] == "disabled", timeout=10)
        # Billing is first probed after 5 minutes; the operator who topped up need not wait.
        done = one.cli("upstreams", "--url", one.url, "--restore", "anthropic/acct-a")
        assert done.returncode == 0, done.stderr
        assert "anthropic/acct-a is back in rotation" in done.stderr
        assert "acct-a" in done.stdout
        assert upstreams(one)["acct-a"]["state"] == "healthy"
        assert wait_until(lambda: upstreams(two)["acct-a"]["state"] == "healthy", timeout=10)  # everywhere
        before = len(a.requests)
        assert [post(two, two.create_key())[0] for _ in range(4)] == [200] * 4
        assert len(a.requests) > before
        unknown = one.cli("upstreams", "--url", one.url, "--restore", "anthropic/nobody")
        assert unknown.returncode == 1
        assert "no credential 'nobody' of vendor 'anthropic'" in unknown.stderr
        malformed = one.cli("upstreams", "--url", one.url, "--restore", "acct-a")
        assert malformed.returncode == 2 and "VENDOR/NAME" in malformed.stderr
