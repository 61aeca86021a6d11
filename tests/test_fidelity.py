"""Bytes in equal bytes out, both ways: body, path, query, headers, status, compressed bodies."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import anthropic

from fakes.fake_anthropic import FakeAnthropic, Reply, message_json, text_stream_events
from support import UPSTREAM_KEY, BuzzProcess, raw_post

# Headers a client sends that must arrive upstream exactly as sent (names compared
# case-insensitively, values byte for byte).
END_TO_END = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,extended-cache-ttl-2025-04-11",
    "user-agent": "claude-cli/2.1.185 (external, cli)",
    "x-app": "cli",
    "x-stainless-lang": "js",
    "x-stainless-retry-count": "0",
    "x-claude-code-session-id": "5c1f6a52-63a4-4f4e-a3e4-0ad2f0c1d9b7",
    "x-some-unknown-header": "kept  as is;\twith, commas",
    "anthropic-workspace-id": "wrkspc_01ABC",
    "accept": "application/json",
    "accept-encoding": "gzip, deflate",
    "content-type": "application/json",
}
DENIED = {"host", "content-length", "x-api-key", "authorization", "connection", "keep-alive", "x-buzz-user"}


def test_request_body_path_query_and_headers_reach_upstream_unchanged(
    buzz: BuzzProcess, fake: FakeAnthropic, key: str
) -> None:
    # Odd but valid JSON: spacing, key order, unicode escapes and raw UTF-8 must all survive.
    body = (
        b'{ "stream" : false,"model":"claude-sonnet-4-6" ,"max_tokens":64,\n'
        b'"messages":[{"role":"user","content":"caf\\u00e9 \xe2\x98\x95 \\"q\\""}],'
        b'"temperature":0.7,"top_k":5,"metadata":{"user_id":"u-42"}}'
    )
    headers = {**END_TO_END, "x-api-key": key, "x-buzz-user": "someone", "connection": "keep-alive"}
    status, _, _ = raw_post(buzz.url, "/v1/messages?beta=true&x=%2Fy", body, headers)
    assert status == 200
    [seen] = fake.requests
    assert seen.method == "POST"
    assert seen.path == "/v1/messages"
    assert seen.query_string == "beta=true&x=%2Fy"
    assert seen.body == body
    received = {name.decode().lower(): value.decode() for name, value in seen.raw_headers}
    for name, value in END_TO_END.items():
        assert received[name] == value, name
    # The client's key never reaches the upstream; the upstream key is in the header the client used.
    assert key not in repr(seen.raw_headers)
    assert received["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in received
    assert "x-buzz-user" not in received
    # Nothing added: every header upstream is one the client sent, or the ones HTTP requires.
    assert set(received) - {n.lower() for n in END_TO_END} <= {"host", "content-length", "x-api-key"}
    assert received["content-length"] == str(len(body))


def test_bearer_credential_is_replaced_in_the_bearer_header(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)  # SDK 2.x sends Bearer
    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    [seen] = fake.requests
    assert seen.header("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert seen.header("x-api-key") is None
    assert seen.header("anthropic-version") is not None


def test_sdk_request_bytes_identical_to_direct(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    """The same SDK call, direct and through buzz: the upstream sees the same body and headers."""
    params = {
        "model": "claude-opus-4-8",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "RULES", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": "What's the weather in Reykjavik?"}],
        "tools": [
            {
                "name": "get_weather",
                "description": "Get current weather for a city.",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        ],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "6f1d0c2e"},
    }
    direct = anthropic.Anthropic(api_key=UPSTREAM_KEY, base_url=fake.url, max_retries=0)
    through = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)
    a = direct.messages.create(**params)  # type: ignore[call-overload]
    b = through.messages.create(**params)  # type: ignore[call-overload]
    first, second = fake.requests
    assert first.body == second.body
    assert first.query_string == second.query_string
    # `connection` is hop-by-hop: it describes the client's connection to buzz, not the request.
    skip = {
        "host",
        "connection",
        "x-stainless-retry-count",
        "x-stainless-read-timeout",
        "x-stainless-timeout",
    }
    headers_a = {k.decode().lower(): v for k, v in first.raw_headers if k.decode().lower() not in skip}
    headers_b = {k.decode().lower(): v for k, v in second.raw_headers if k.decode().lower() not in skip}
    assert headers_a == headers_b
    assert a.usage.cache_creation_input_tokens == b.usage.cache_creation_input_tokens
    assert b.content[0].type == "text"


def test_response_status_headers_and_body_reach_client_unchanged(
    buzz: BuzzProcess, fake: FakeAnthropic, key: str
) -> None:
    body = message_json("claude-sonnet-4-6", "exact bytes back", {"input_tokens": 12, "output_tokens": 4})
    reply_headers = [
        ("content-type", "application/json"),
        ("request-id", "req_011CSLsW7mFqvHHnzrKdKjAE"),
        ("anthropic-ratelimit-requests-limit", "1000"),
        ("anthropic-ratelimit-requests-remaining", "999"),
        ("anthropic-organization-id", "36562039-1ae4-48e6-ae28-1e517e3d2d12"),
        ("x-envoy-upstream-service-time", "690"),
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/"),
        ("X-Mixed-Case", "Value With Spaces"),
    ]
    fake.enqueue(Reply(status=201, headers=reply_headers, body=body))
    status, headers, data = raw_post(
        buzz.url,
        "/v1/messages",
        b'{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[]}',
        {"x-api-key": key},
    )
    assert status == 201
    assert data == body
    got = [(name.lower(), value) for name, value in headers]
    for name, value in reply_headers:
        assert (name.lower(), value) in got
    assert got.count(("set-cookie", "a=1; Path=/")) == 1
    assert dict(got)["content-length"] == str(len(body))
    [row] = buzz.ledger(count=1, where=lambda r: r["upstream_request_id"] == "req_011CSLsW7mFqvHHnzrKdKjAE")
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == (201, 12, 4)


def test_gzip_body_is_relayed_compressed_and_metered_from_a_copy(
    buzz: BuzzProcess, fake: FakeAnthropic, key: str
) -> None:
    plain = message_json("claude-haiku-4-5", "compressed", {"input_tokens": 321, "output_tokens": 9})
    fake.enqueue(Reply(body=plain, gzip=True, headers=[("request-id", "req_gzip_1")]))
    status, headers, data = raw_post(
        buzz.url,
        "/v1/messages",
        b'{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}',
        {"x-api-key": key, "accept-encoding": "gzip"},
    )
    assert status == 200
    assert dict((k.lower(), v) for k, v in headers)["content-encoding"] == "gzip"
    assert data == gzip.compress(plain, mtime=0)  # the raw compressed bytes, not re-encoded
    assert gzip.decompress(data) == plain
    [row] = buzz.ledger(count=1, where=lambda r: r["upstream_request_id"] == "req_gzip_1")
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (321, 9, "reported")


def test_gzip_stream_is_relayed_compressed_and_metered(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    events = text_stream_events(
        "claude-haiku-4-5",
        ["a", "b", "c"],
        {"input_tokens": 77, "output_tokens": 1},
        {"output_tokens": 30},
    )
    fake.enqueue(Reply(chunks=events, gzip=True, headers=[("request-id", "req_gzip_stream")]))
    status, _headers, data = raw_post(
        buzz.url,
        "/v1/messages",
        b'{"model":"claude-haiku-4-5","max_tokens":5,"stream":true,"messages":[]}',
        {"x-api-key": key},
    )
    assert status == 200
    assert gzip.decompress(data) == b"".join(events)
    [row] = buzz.ledger(count=1, where=lambda r: r["upstream_request_id"] == "req_gzip_stream")
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (77, 30, "reported")


def test_count_tokens_is_forwarded_and_not_billed(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "count me"}]}
    result = client.messages.count_tokens(**body)  # type: ignore[arg-type]
    [seen] = fake.requests
    assert seen.path == "/v1/messages/count_tokens"
    assert result.input_tokens == max(1, len(seen.body) // 4)
    assert json.loads(seen.body)["messages"] == body["messages"]
    [row] = buzz.ledger(count=1, where=lambda r: r["upstream_request_id"] == result._request_id)
    assert (row["status"], row["input_tokens"], row["cost_nanos"], row["usage_source"]) == (200, 0, 0, "none")


def test_curl_stream_bytes_equal_upstream_bytes(
    buzz: BuzzProcess, fake: FakeAnthropic, key: str, tmp_path: Path
) -> None:
    events = text_stream_events(
        "claude-sonnet-4-6",
        ["curl ", "sees ", "every byte"],
        {"input_tokens": 9, "output_tokens": 1},
        {"output_tokens": 3},
    )
    fake.enqueue(Reply(chunks=events))
    body_file = tmp_path / "body.json"
    body = b'{"model":"claude-sonnet-4-6","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
    body_file.write_bytes(body)
    result = subprocess.run(
        [
            "curl", "-sS", "-N", "--fail-with-body", "-D", str(tmp_path / "headers"),
            f"{buzz.url}/v1/messages?beta=true",
            "-H", f"x-api-key: {key}",
            "-H", "anthropic-version: 2023-06-01",
            "-H", "content-type: application/json",
            "--data-binary", f"@{body_file}",
        ],
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"".join(events)
    assert fake.requests[0].body == body
    assert fake.requests[0].query_string == "beta=true"
    assert "text/event-stream" in (tmp_path / "headers").read_text()
