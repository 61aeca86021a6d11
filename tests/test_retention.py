"""Zero retention: a canary in every request and response, then a search of everything buzz wrote."""

from __future__ import annotations

import http.client
import json
import signal
import socket
from pathlib import Path

import anthropic
import pytest

from fakes.fake_anthropic import (
    FakeAnthropic,
    Reply,
    error_reply,
    message_json,
    midstream_error_events,
    text_stream_events,
)
from support import BuzzProcess, raw_post, wait_until

CANARY = "CANARY-7f3a9c-do-not-keep"


def _body(stream: bool = False) -> bytes:
    return json.dumps(
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 32,
            "stream": stream,
            "system": f"{CANARY} system",
            "messages": [{"role": "user", "content": f"{CANARY} prompt"}],
        }
    ).encode()


def _disconnect_mid_stream(url: str, key: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    body = _body(stream=True)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode() + b"\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_no_body_content_is_written_anywhere(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    process = BuzzProcess(tmp_path / "data", fake_session.url, env={"BUZZ_LOG_LEVEL": "debug"}).start()
    fake = fake_session
    fake.clear()
    key = process.create_key()
    usage = {"input_tokens": 50, "output_tokens": 1}
    try:
        # Not streamed, streamed, thinking through the SDK.
        fake.enqueue(Reply(body=message_json("claude-sonnet-4-6", f"{CANARY} answer", usage)))
        assert raw_post(process.url, "/v1/messages", _body(), {"x-api-key": key})[0] == 200
        fake.enqueue(
            Reply(chunks=text_stream_events("claude-sonnet-4-6", [CANARY, " streamed"], usage, {"output_tokens": 9}))
        )
        assert raw_post(process.url, "/v1/messages", _body(stream=True), {"x-api-key": key})[0] == 200
        client = anthropic.Anthropic(api_key=key, base_url=process.url, max_retries=0)
        fake.enqueue(Reply(body=message_json("claude-sonnet-4-6", CANARY, usage, stop_reason="end_turn")))
        client.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": CANARY}])
        # Upstream errors, before and in the middle of a stream.
        fake.enqueue(error_reply(400, "invalid_request_error", f"bad: {CANARY}"))
        assert raw_post(process.url, "/v1/messages", _body(), {"x-api-key": key})[0] == 400
        fake.enqueue(Reply(chunks=midstream_error_events("claude-sonnet-4-6", [CANARY], usage, message=CANARY)))
        assert raw_post(process.url, "/v1/messages", _body(stream=True), {"x-api-key": key})[0] == 200
        # buzz's own errors, with the canary where buzz might be tempted to quote it.
        assert raw_post(process.url, "/v1/messages", f"{{{CANARY}".encode(), {"x-api-key": key})[0] == 400
        model_canary = f'{{"model":"{CANARY}","messages":[]}}'.encode()
        assert raw_post(process.url, "/v1/messages", model_canary, {"x-api-key": key})[0] == 404
        assert raw_post(process.url, "/v1/messages", _body(), {"x-api-key": f"buzz-{CANARY}"})[0] == 401
        # A client that vanishes mid-stream, and an upstream that drops mid-stream.
        events = text_stream_events("claude-sonnet-4-6", [CANARY] * 20, usage, {"output_tokens": 40})
        fake.enqueue(Reply(chunks=events, delays=[0.0] + [0.05] * (len(events) - 1)))
        _disconnect_mid_stream(process.url, key)
        fake.enqueue(Reply(chunks=events, drop_after_chunks=4))
        with pytest.raises((OSError, http.client.HTTPException)):
            raw_post(process.url, "/v1/messages", _body(stream=True), {"x-api-key": key})
        # Nine rows: the refused key leaves none.
        assert wait_until(lambda: len(process.ledger()) >= 9, timeout=10)
    finally:
        exit_code = process.stop(signal.SIGTERM)
    assert exit_code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown

    assert len(process.ledger()) == 9
    # The canary really did cross buzz: the fake upstream saw it in every forwarded request.
    assert all(CANARY.encode() in request.body for request in fake.requests)
    written = [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
    assert any(path.name.startswith("buzz.sqlite3") for path in written)
    for path in written:
        assert CANARY.encode() not in path.read_bytes(), f"canary found in {path}"
    assert CANARY.encode() not in process.output()
    assert b"Traceback" not in process.output()
