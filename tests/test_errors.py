"""Upstream errors pass through untouched; buzz's own carry gateway_* types; each leaves a row."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from fakes.fake_anthropic import FakeAnthropic, Reply, error_reply, midstream_error_events
from support import BuzzProcess, free_port, raw_post

BODY = b'{"model":"claude-sonnet-4-6","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'

UPSTREAM_ERRORS = [
    (400, "invalid_request_error", anthropic.BadRequestError),
    (401, "authentication_error", anthropic.AuthenticationError),
    (403, "permission_error", anthropic.PermissionDeniedError),
    (404, "not_found_error", anthropic.NotFoundError),
    (413, "request_too_large", anthropic.APIStatusError),
    (429, "rate_limit_error", anthropic.RateLimitError),
    (500, "api_error", anthropic.InternalServerError),
    (529, "overloaded_error", anthropic.InternalServerError),
]


@pytest.mark.parametrize(("status", "error_type", "exception"), UPSTREAM_ERRORS)
def test_upstream_error_passes_through_untouched(
    buzz: BuzzProcess, fake: FakeAnthropic, key: str, status: int, error_type: str, exception: type[Exception]
) -> None:
    reply = error_reply(
        status,
        error_type,
        f"upstream says {status}",
        headers=[("retry-after", "7"), ("x-should-retry", "false")] if status != 429 else None,
        request_id=f"req_upstream_{status}",
    )
    fake.enqueue(reply)
    got_status, got_headers, got_body = raw_post(buzz.url, "/v1/messages", BODY, {"x-api-key": key})
    assert got_status == status
    assert got_body == reply.body
    received = [(name.lower(), value) for name, value in got_headers]
    for name, value in reply.headers:
        assert (name.lower(), value) in received, name
    assert ("x-buzz-error-source", "gateway") not in received
    assert len(fake.requests) == 1  # exactly one upstream attempt

    # The SDK sees the vendor's own error and raises the matching exception.
    fake.enqueue(reply)
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)
    with pytest.raises(exception) as raised:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == status  # type: ignore[attr-defined]
    assert raised.value.body["error"]["type"] == error_type  # type: ignore[attr-defined]
    assert len(fake.requests) == 2

    rows = buzz.ledger(count=2, where=lambda r: r["upstream_request_id"] == f"req_upstream_{status}")
    assert [(r["status"], r["error_type"], r["usage_source"]) for r in rows] == [(status, error_type, "none")] * 2


def test_sdk_retries_are_the_clients_not_buzzs(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    """With the SDK's default two retries, the upstream sees three attempts: one per client attempt."""
    for _ in range(3):
        fake.enqueue(error_reply(529, "overloaded_error", "Overloaded", retry_after=None, should_retry=True))
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=2)
    with pytest.raises(anthropic.InternalServerError):
        client.with_options(timeout=30).messages.create(
            model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "x"}]
        )
    assert len(fake.requests) == 3
    assert [r.header("x-stainless-retry-count") for r in fake.requests] == ["0", "1", "2"]


def test_midstream_error_event_is_relayed_not_converted(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    events = midstream_error_events(
        "claude-sonnet-4-6", ["partial", " answer"], {"input_tokens": 40, "output_tokens": 1}
    )
    fake.enqueue(Reply(chunks=events, headers=[("request-id", "req_midstream")]))
    body = BODY.replace(b'"max_tokens":16', b'"max_tokens":16,"stream":true')
    status, _, data = raw_post(buzz.url, "/v1/messages", body, {"x-api-key": key})
    assert status == 200
    assert data == b"".join(events)

    fake.enqueue(Reply(chunks=events))
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        stream.get_final_message()
    assert "overloaded_error" in str(raised.value.body)
    [row] = buzz.ledger(count=1, where=lambda r: r["upstream_request_id"] == "req_midstream")
    assert row["status"] == 200
    assert row["error_type"] == "overloaded_error"
    assert row["input_tokens"] == 40
    assert row["usage_source"] == "estimated"


def _gateway_error(_status: int, headers: list[tuple[str, str]], body: bytes, error_type: str) -> dict[str, object]:
    document = json.loads(body)
    assert document["type"] == "error"
    assert document["error"]["type"] == error_type
    assert document["request_id"].startswith("req_")
    received = {name.lower(): value for name, value in headers}
    assert received["x-buzz-error-source"] == "gateway"
    assert received["content-type"] == "application/json"
    return document


def test_bad_keys_are_refused_before_anything_is_forwarded(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    cases = {
        "missing": {},
        "not a buzz key": {"x-api-key": "sk-ant-api03-something"},
        "unknown": {"x-api-key": "buzz-aaaaaaaaaaaa-" + "A" * 32},
        "wrong secret": {"x-api-key": key[:-1] + ("B" if key[-1] != "B" else "C")},
        "bearer wrong": {"authorization": "Bearer buzz-nope"},
    }
    for headers in cases.values():
        status, got_headers, body = raw_post(buzz.url, "/v1/messages", BODY, headers)
        assert status == 401
        _gateway_error(status, got_headers, body, "gateway_authentication_error")
        assert dict((k.lower(), v) for k, v in got_headers)["x-should-retry"] == "false"
    assert fake.requests == []
    client = anthropic.Anthropic(api_key="buzz-bad", base_url=buzz.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=1, messages=[])
    assert raised.value.body["error"]["type"] == "gateway_authentication_error"  # type: ignore[index]


def test_revoked_key_is_refused_from_the_next_request(buzz: BuzzProcess, fake: FakeAnthropic) -> None:
    token = buzz.create_key(project="revocable")
    key_id = token.split("-")[1]
    assert raw_post(buzz.url, "/v1/messages", BODY, {"x-api-key": token})[0] == 200
    result = buzz.cli("keys", "revoke", key_id)
    assert result.returncode == 0, result.stderr
    status, headers, body = raw_post(buzz.url, "/v1/messages", BODY, {"x-api-key": token})
    assert status == 401
    assert "revoked" in _gateway_error(status, headers, body, "gateway_authentication_error")["error"]["message"]  # type: ignore[index]
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"max_tokens": 5, "messages": []}', "model"),
        (b'{"model": 42}', "model"),
        (b"", "not valid JSON"),
    ],
)
def test_bodies_buzz_cannot_route_get_400(
    buzz: BuzzProcess, fake: FakeAnthropic, key: str, body: bytes, message_part: str
) -> None:
    status, headers, data = raw_post(buzz.url, "/v1/messages", body, {"x-api-key": key})
    assert status == 400
    document = _gateway_error(status, headers, data, "gateway_invalid_request_error")
    assert message_part in document["error"]["message"]  # type: ignore[index]
    assert fake.requests == []


def test_unknown_route_and_unroutable_model_get_404(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    status, headers, data = raw_post(buzz.url, "/v1/nothing-here", BODY, {"x-api-key": key})
    assert status == 404
    _gateway_error(status, headers, data, "gateway_not_found_error")
    status, headers, data = raw_post(
        buzz.url, "/v1/messages", b'{"model":"gpt-4o","max_tokens":1,"messages":[]}', {"x-api-key": key}
    )
    assert status == 404
    document = _gateway_error(status, headers, data, "gateway_not_found_error")
    assert "/v1/models" in document["error"]["message"]  # type: ignore[index]
    assert fake.requests == []


def test_newer_claude_ids_are_routed_verbatim(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    body = b'{"model":"claude-opus-4-9-20270101","max_tokens":1,"messages":[]}'
    assert raw_post(buzz.url, "/v1/messages", body, {"x-api-key": key})[0] == 200
    assert fake.requests[0].body == body


# --- a gateway of its own, for limits and broken upstreams --------------------------------


@pytest.fixture
def tight(tmp_path: Path, fake_session: FakeAnthropic) -> Iterator[BuzzProcess]:
    process = BuzzProcess(
        tmp_path / "data",
        fake_session.url,
        env={"BUZZ_MAX_BODY_BYTES": "1000", "BUZZ_READ_TIMEOUT": "0.5", "BUZZ_CONNECT_TIMEOUT": "0.5"},
    ).start()
    fake_session.clear()
    yield process
    process.stop()
    fake_session.clear()


def test_body_over_the_limit_gets_413(tight: BuzzProcess, fake_session: FakeAnthropic) -> None:
    key = tight.create_key()
    big = b'{"model":"claude-sonnet-4-6","max_tokens":1,"messages":[{"role":"user","content":"' + b"x" * 2000 + b'"}]}'
    status, headers, data = raw_post(tight.url, "/v1/messages", big, {"x-api-key": key})
    assert status == 413
    _gateway_error(status, headers, data, "gateway_request_too_large")
    assert fake_session.requests == []
    [row] = tight.ledger(count=1)
    assert (row["status"], row["error_type"], row["key_id"]) == (
        413,
        "gateway_request_too_large",
        key.split("-")[1],
    )


def test_upstream_hang_gets_504_after_the_read_timeout(tight: BuzzProcess, fake_session: FakeAnthropic) -> None:
    key = tight.create_key()
    fake_session.enqueue(Reply(hang=True))
    status, headers, data = raw_post(tight.url, "/v1/messages", BODY, {"x-api-key": key})
    assert status == 504  # the upstream never answers: only buzz's read timeout ends this
    _gateway_error(status, headers, data, "gateway_timeout_error")
    [row] = tight.ledger(count=1)
    assert (row["status"], row["error_type"], row["model"]) == (
        504,
        "gateway_timeout_error",
        "claude-sonnet-4-6",
    )


def test_upstream_reset_before_a_byte_gets_502(tight: BuzzProcess, fake_session: FakeAnthropic) -> None:
    key = tight.create_key()
    fake_session.enqueue(Reply(reset_before_headers=True))
    status, headers, data = raw_post(tight.url, "/v1/messages", BODY, {"x-api-key": key})
    assert status == 502
    _gateway_error(status, headers, data, "gateway_upstream_error")
    assert len(fake_session.requests) == 1  # not retried
    [row] = tight.ledger(count=1)
    assert (row["status"], row["error_type"]) == (502, "gateway_upstream_error")


def test_upstream_unreachable_gets_502(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    with BuzzProcess(tmp_path / "data", f"http://127.0.0.1:{closed}") as process:
        key = process.create_key()
        status, headers, data = raw_post(process.url, "/v1/messages", BODY, {"x-api-key": key})
        assert status == 502
        _gateway_error(status, headers, data, "gateway_upstream_error")
        assert dict((k.lower(), v) for k, v in headers)["x-should-retry"] == "true"
        [row] = process.ledger(count=1)
        assert (row["status"], row["error_type"]) == (502, "gateway_upstream_error")


def test_upstream_drop_mid_stream_cuts_the_client_too(tight: BuzzProcess, fake_session: FakeAnthropic) -> None:
    key = tight.create_key()
    body = BODY.replace(b'"max_tokens":16', b'"max_tokens":16,"stream":true')
    fake_session.enqueue(Reply(chunks=[b"event: ping\ndata: {}\n\n"] * 6, drop_after_chunks=3))
    host, port = tight.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode() + b"\r\n"
            b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    # The client saw a 200 and three events, then a closed connection without the final chunk.
    assert received.startswith(b"HTTP/1.1 200")
    assert received.count(b"event: ping") == 3
    assert not received.endswith(b"0\r\n\r\n")
    [row] = tight.ledger(count=1)
    assert (row["status"], row["error_type"]) == (200, "upstream_reset")


def test_huge_body_from_the_sdk_gets_a_clean_413(tight: BuzzProcess, fake_session: FakeAnthropic) -> None:
    """A 40 MB prompt: the client reads buzz's 413, not a reset connection, and nothing is forwarded."""
    key = tight.create_key()
    client = anthropic.Anthropic(api_key=key, base_url=tight.url, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "x" * 40_000_000}]
        )
    assert raised.value.status_code == 413
    assert raised.value.body["error"]["type"] == "gateway_request_too_large"  # type: ignore[index]
    assert fake_session.requests == []
