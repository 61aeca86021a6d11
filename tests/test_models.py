"""`GET /v1/models[/{id}]` spoken by Anthropic clients: Anthropic's own list, through buzz.

The request is proxied like any other (buzz's key swapped for the upstream's, a ledger row that
bills nothing), and the answer, its paging included, is Anthropic's byte for byte.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import anthropic
import pytest

from fakes.anthropic_sse import DEFAULT_MODELS
from fakes.fake_anthropic import FakeAnthropic
from fakes.replies import Reply
from support import UPSTREAM_KEY, BuzzProcess

LISTED = [model for model, _ in DEFAULT_MODELS]


def _get(url: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {name.lower(): value for name, value in response.getheaders()}, data


def test_sdk_list_is_anthropics_own_page_by_page(buzz: BuzzProcess, fake: FakeAnthropic) -> None:
    key = buzz.create_key(project="model-list")
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)
    assert [model.id for model in client.models.list(limit=2)] == LISTED  # the SDK follows after_id itself
    first, second = fake.requests
    assert (first.method, first.path, first.query_string) == ("GET", "/v1/models", "limit=2")
    assert (second.path, second.query_string) == ("/v1/models", f"limit=2&after_id={LISTED[1]}")
    for seen in (first, second):
        assert seen.header("authorization") == f"Bearer {UPSTREAM_KEY}"  # SDK 2.x sends its key as Bearer
        assert seen.header("anthropic-version") is not None
        assert key.encode() not in seen.raw_head
    rows = buzz.ledger(count=2, where=lambda r: r["project"] == "model-list")
    assert [(r["surface"], r["provider"], r["status"], r["model"]) for r in rows] == [
        ("anthropic", "anthropic", 200, None)
    ] * 2
    assert all(r["usage_source"] == "none" and r["cost_nanos"] == 0 and r["input_tokens"] == 0 for r in rows)


def test_claude_code_discovery_is_relayed_byte_for_byte(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    # What Claude Code sends with CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1.
    answer = (
        b'{"data":[{"type":"model","id":"claude-opus-4-8","display_name":"Opus","created_at":"2026-05-28T00:00:00Z"}],'
        b'"has_more":false,"first_id":"claude-opus-4-8","last_id":"claude-opus-4-8"}'
    )
    fake.enqueue(Reply(body=answer, headers=[("request-id", "req_models_1"), ("x-vendor", "Kept")]))
    headers = {"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01", "anthropic-beta": "b1"}
    status, received, data = _get(buzz.url, "/v1/models?limit=1000&after_id=x%2By&beta=true", headers)
    assert (status, data) == (200, answer)
    assert (received["request-id"], received["x-vendor"]) == ("req_models_1", "Kept")
    [seen] = fake.requests
    assert (seen.method, seen.path, seen.query_string) == ("GET", "/v1/models", "limit=1000&after_id=x%2By&beta=true")
    assert seen.header("authorization") == f"Bearer {UPSTREAM_KEY}"  # in the header the client used
    assert seen.header("anthropic-beta") == "b1" and seen.body == b""
    assert seen.header("content-length") is None  # nothing the client did not send
    [row] = buzz.ledger(count=1, where=lambda r: r["upstream_request_id"] == "req_models_1")
    assert (row["surface"], row["status"], row["usage_source"], row["cost_nanos"]) == ("anthropic", 200, "none", 0)


def test_paging_errors_and_unknown_models_are_anthropics(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.models.list(limit=0)
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "x-buzz-error-source" not in bad.value.response.headers
    assert client.models.retrieve("claude-sonnet-4-6").display_name == "Claude Sonnet 4.6"
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.models.retrieve("gpt-4o")
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert [(r.path, r.query_string) for r in fake.requests] == [
        ("/v1/models", "limit=0"),
        ("/v1/models/claude-sonnet-4-6", ""),
        ("/v1/models/gpt-4o", ""),
    ]


def test_the_key_in_x_api_key_alone_means_anthropic(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    status, _, data = _get(buzz.url, "/v1/models", {"x-api-key": key})
    assert status == 200 and json.loads(data)["data"][0]["type"] == "model"
    [seen] = fake.requests
    assert seen.header("x-api-key") == UPSTREAM_KEY


def test_models_need_a_key(buzz: BuzzProcess, fake: FakeAnthropic) -> None:
    status, received, data = _get(buzz.url, "/v1/models", {"x-api-key": "buzz-wrong"})
    assert status == 401 and received["x-buzz-error-source"] == "gateway"
    assert json.loads(data)["error"]["type"] == "gateway_authentication_error"
    assert fake.requests == []


def test_without_anthropic_configured_its_models_are_refused_by_name(tmp_path: Path, fake: FakeAnthropic) -> None:
    process = BuzzProcess(tmp_path / "data", fake.url)
    del process.env["ANTHROPIC_API_KEY"]
    with process:
        key = process.create_key()
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        status, _, data = _get(process.url, "/v1/models", headers)
        error = json.loads(data)["error"]
        assert (status, error["type"]) == (404, "gateway_not_found_error")
        assert error["message"] == "vendor Anthropic is not configured on this gateway"
        client = anthropic.Anthropic(api_key=key, base_url=process.url, max_retries=0)
        with pytest.raises(anthropic.NotFoundError) as raised:
            client.messages.create(model="claude-opus-4-8", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert raised.value.body["error"]["message"] == "vendor Anthropic is not configured on this gateway"  # type: ignore[index]
        with pytest.raises(anthropic.NotFoundError) as unknown:
            client.messages.create(model="mistral-large", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert "not served by this gateway" in unknown.value.body["error"]["message"]  # type: ignore[index]
        assert fake.requests == []
