"""A client that goes away: the upstream request is cancelled at once, and the row is still written."""

from __future__ import annotations

import socket
import threading

from fakes.fake_anthropic import FakeAnthropic, Reply, text_stream_events
from support import BuzzProcess, wait_until

BODY = b'{"model":"claude-sonnet-4-6","max_tokens":512,"stream":true,"messages":[]}'


def _open_stream(url: str, key: str, body: bytes = BODY) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode() + b"\r\n"
        b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    return sock


def test_client_disconnect_mid_stream_cancels_upstream_and_keeps_the_row(
    buzz: BuzzProcess, fake: FakeAnthropic, key: str
) -> None:
    pieces = ["word " * 40] * 50
    events = text_stream_events(
        "claude-sonnet-4-6", pieces, {"input_tokens": 1200, "output_tokens": 1}, {"output_tokens": 2500}
    )
    # The upstream sends six events, then waits for a gate that is opened only at the end of the
    # test: it can stop early only if buzz hangs up on it when the client leaves.
    held = threading.Event()
    gates: list[threading.Event | None] = [None] * 6 + [held] * (len(events) - 6)
    fake.enqueue(Reply(chunks=events, gates=gates, headers=[("request-id", "req_gone")]))
    try:
        sock = _open_stream(buzz.url, key)
        received = b""
        while received.count(b"event: content_block_delta") < 2:
            received += sock.recv(65536)
        sock.close()
        assert wait_until(lambda: fake.disconnect_times(), timeout=30)
        assert len(fake.chunk_times()) == 6
    finally:
        held.set()

    [row] = buzz.ledger(count=1, where=lambda r: r["upstream_request_id"] == "req_gone")
    assert row["status"] == 200
    assert row["error_type"] == "client_disconnected"
    assert row["usage_source"] == "estimated"
    assert row["input_tokens"] == 1200  # from message_start, which was seen
    assert 1 <= row["output_tokens"] < 2500  # estimated from what was relayed, not the final count
    assert row["cost_nanos"] > 0


def test_client_disconnect_before_the_upstream_answers(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    fake.enqueue(Reply(hang=True))
    sock = _open_stream(buzz.url, key)
    assert wait_until(lambda: len(fake.requests) == 1, timeout=5)
    sock.close()
    # The upstream never answers: it sees a disconnect only if buzz cancels its request.
    assert wait_until(lambda: fake.disconnect_times(), timeout=30)
    [row] = buzz.ledger(count=1, where=lambda r: r["status"] == 499)
    assert row["error_type"] == "client_disconnected"
    assert row["model"] == "claude-sonnet-4-6"
    assert (row["input_tokens"], row["output_tokens"], row["cost_nanos"]) == (0, 0, 0)


def test_client_that_stops_sending_its_body(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    host, port = buzz.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode() + b"\r\n"
            b"content-length: 5000\r\n\r\n" + b'{"model":"claude-sonnet-4-6",'
        )
    [row] = buzz.ledger(count=1, where=lambda r: r["status"] == 499 and r["model"] is None)
    assert row["error_type"] == "client_disconnected"
    assert fake.requests == []
