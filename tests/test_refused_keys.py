"""Requests without a valid key: answered, counted, throttled per address, and never a ledger row."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from buzz.proxy.auth import FailureThrottle
from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, raw_post

BODY = b'{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}'
TOKEN = "operator-token-for-tests"


def _counters(process: BuzzProcess) -> dict[str, int]:
    request = urllib.request.Request(process.url + "/admin/api/counters", headers={"authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        counts: dict[str, int] = json.loads(response.read())
        return counts


def test_refused_keys_leave_no_row_and_are_throttled_per_address(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake_session.url, env={"BUZZ_ADMIN_TOKEN": TOKEN}) as process:
        known, fresh = process.create_key(), process.create_key()  # both valid; `fresh` is never used first
        assert raw_post(process.url, "/v1/messages", BODY, {"x-api-key": known})[0] == 200  # now known here
        wrong = "buzz-aaaaaaaaaaaa-" + "B" * 32
        statuses = [raw_post(process.url, "/v1/messages", BODY, {"x-api-key": wrong})[0] for _ in range(30)]
        assert statuses == [401] * 30
        status, headers, body = raw_post(process.url, "/v1/messages", BODY, {"x-api-key": wrong})
        assert status == 429 and json.loads(body)["error"]["type"] == "gateway_rate_limit_error"
        retry_after = int(dict((k.lower(), v) for k, v in headers)["retry-after"])
        assert 1 <= retry_after <= 60
        # Throttled addresses keep keys this gateway already knows; anything else waits.
        assert raw_post(process.url, "/v1/messages", BODY, {"x-api-key": known})[0] == 200
        assert raw_post(process.url, "/v1/messages", BODY, {"x-api-key": fresh})[0] == 429
        assert raw_post(process.url, "/v1/messages", BODY, {})[0] == 429
        counts = _counters(process)
        assert (counts["auth_refused"], counts["auth_throttled"]) == (30, 3)
        # Only the two requests with a valid key left rows.
        rows = process.ledger(count=2)
    assert [row["status"] for row in rows] == [200, 200]
    assert len(process.ledger()) == 2


def test_the_throttle_counts_per_address_and_forgets_after_its_window() -> None:
    now = [1_000_000.0]
    throttle = FailureThrottle(limit=3, window=60.0, clock=lambda: now[0], size=2)
    assert not throttle.active and throttle.wait("a") is None
    for _ in range(3):
        throttle.refused("a")
    throttle.refused("b")
    assert throttle.wait("a") == 60.0 and throttle.wait("b") is None
    now[0] += 59.5
    assert throttle.wait("a") == 0.5
    now[0] += 0.5
    assert throttle.wait("a") is None  # the window is over: a fresh start
    throttle.refused("a")
    assert throttle.wait("a") is None
    # The table is bounded: a third address evicts the one refused longest ago.
    throttle.refused("c")
    throttle.refused("c")
    throttle.refused("c")
    assert throttle.wait("c") == 60.0 and set(throttle._failures) == {"a", "c"}


def test_api_key_says_what_a_key_is_without_asking_any_vendor(tmp_path: Path, fake: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake.url, env={"ANTHROPIC_API_KEY": ""}) as process:
        key = process.cli("keys", "create", "--project", "acme", "--models", "claude-*").stdout.strip()
        request = urllib.request.Request(process.url + "/api/key", headers={"x-api-key": key})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["cache-control"] == "private, no-store"
            document = json.loads(response.read())
        assert document == {"id": key.split("-")[1], "project": "acme", "expires_at": None, "models": ["claude-*"]}
        bearer = urllib.request.Request(process.url + "/api/key", headers={"authorization": f"Bearer {key}"})
        with urllib.request.urlopen(bearer, timeout=10) as response:
            assert json.loads(response.read())["id"] == key.split("-")[1]
        # The last character changed, whatever it was: a key that ends in "x" must not stay right.
        wrong_key = key[:-1] + ("y" if key.endswith("x") else "x")
        wrong = urllib.request.Request(process.url + "/api/key", headers={"x-api-key": wrong_key})
        try:
            urllib.request.urlopen(wrong, timeout=10)
            raise AssertionError("a wrong key was accepted")
        except urllib.error.HTTPError as error:
            assert error.code == 401
    assert fake.requests == [] and process.ledger() == []
