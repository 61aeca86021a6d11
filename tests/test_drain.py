"""A graceful shutdown that runs out of time cuts what is still open, and every row says so."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from fakes.fake_anthropic import FakeAnthropic, Reply, text_stream_events
from support import BuzzProcess, wait_until

BODY = b'{"model":"claude-haiku-4-5","max_tokens":50,"stream":true,"messages":[]}'


def test_streams_cut_by_the_shutdown_timeout_are_recorded_as_cut(tmp_path: Path, fake: FakeAnthropic) -> None:
    events = text_stream_events(
        "claude-haiku-4-5", ["one", "two"], {"input_tokens": 10, "output_tokens": 1}, {"output_tokens": 2}
    )
    # The first event at once, the rest only after an hour: the stream is open when shutdown comes.
    fake.enqueue(Reply(chunks=events, delays=[0.0, 3600.0] + [0.0] * (len(events) - 2)))
    process = BuzzProcess(tmp_path / "data", fake.url, env={"BUZZ_SHUTDOWN_TIMEOUT": "1"}).start()
    key = process.create_key()
    with socket.create_connection(("127.0.0.1", process.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode()
            + b"\r\ncontent-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
        )  # fmt: skip
        received = b""
        while b"message_start" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        process.stop(signal.SIGTERM)
        # The cut reaches the client as a connection that ends mid-stream, not as a finished body.
        while chunk := sock.recv(65536):
            received += chunk
    assert not received.endswith(b"0\r\n\r\n")  # no chunked terminator: the client can tell
    rows = process.ledger(count=1)
    assert [(r["status"], r["error_type"]) for r in rows] == [(200, "shutdown_cut")]
    output = process.output().decode()
    assert "Traceback" not in output
    assert [line for line in output.splitlines() if "shutdown cut" in line] == [
        next(line for line in output.splitlines() if "shutdown cut 1 request(s)" in line)
    ]
    assert wait_until(lambda: process.process is not None and process.process.poll() is not None)


def test_sigterm_with_50_streams_finishes_or_cuts_and_bills_every_one(tmp_path: Path, fake: FakeAnthropic) -> None:
    """Half the streams finish after SIGTERM, within the shutdown timeout; the other half outlive it
    and are cut, billed by estimate. No new connection is taken once SIGTERM arrives, and every
    stream has its row."""
    events = text_stream_events(
        "claude-haiku-4-5", ["one", "two"], {"input_tokens": 10, "output_tokens": 1}, {"output_tokens": 2}
    )
    go = threading.Event()  # set after SIGTERM: the finishing streams send the rest of their events
    for _ in range(25):
        fake.enqueue(Reply(chunks=events, gates=[None, go]))
    for _ in range(25):
        fake.enqueue(Reply(chunks=events, delays=[0.0, 3600.0] + [0.0] * (len(events) - 2)))
    process = BuzzProcess(tmp_path / "data", fake.url, env={"BUZZ_SHUTDOWN_TIMEOUT": "3"}).start()
    key = process.create_key()
    request = (
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode()
        + b"\r\ncontent-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )  # fmt: skip
    socks = [socket.create_connection(("127.0.0.1", process.port), timeout=30) for _ in range(50)]
    try:
        received = [b""] * 50
        for sock in socks:
            sock.sendall(request)
        for i, sock in enumerate(socks):
            while b"message_start" not in received[i]:
                received[i] += sock.recv(65536)
        assert process.process is not None
        process.process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: _refused(process.port), timeout=10)  # no new connections
        go.set()
        for i, sock in enumerate(socks):
            while chunk := sock.recv(65536):
                received[i] += chunk
        # Gone, by its own graceful exit (uvicorn reports the signal it stopped for).
        assert process.process.wait(30) in (0, -signal.SIGTERM)
    finally:
        for sock in socks:
            sock.close()
    finished = [r for r in received if r.endswith(b"0\r\n\r\n")]
    assert len(finished) == 25 and all(b"message_stop" in r for r in finished)
    rows = process.ledger(count=50)
    assert len(rows) == 50
    complete = [r for r in rows if r["error_type"] is None]
    cut = [r for r in rows if r["error_type"] == "shutdown_cut"]
    assert len(complete) == 25 and {r["usage_source"] for r in complete} == {"reported"}
    assert len(cut) == 25 and {r["usage_source"] for r in cut} == {"estimated"}
    assert all(r["input_tokens"] == 10 and r["cost_nanos"] > 0 for r in cut)  # billed, by estimate
    assert "Traceback" not in process.output().decode()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False
