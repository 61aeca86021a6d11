"""Upstreams that misbehave on purpose: the client gets every byte, buzz's memory stays flat.

A real `buzz serve` relays answers far larger than anything its meter may hold (a huge JSON body,
an SSE line that never ends, one huge SSE event, a gzip bomb), made on the fly by the fake
upstream. A raw HTTP client hashes each answer as it streams in and compares it with what the
fake sent, while a thread samples buzz's resident memory (VmRSS) throughout. Each row must say
the meter gave up, why, and what it billed instead.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from fakes import abuse
from fakes.fake_anthropic import FakeAnthropic, message_json, text_stream_events
from fakes.replies import SSE_TYPE, Reply
from support import BuzzProcess, wait_until

MIB = 1024 * 1024
PROGRESS_BYTES = 8 * MIB
# What buzz may grow by above its baseline while it relays hundreds of megabytes: the meter's
# 4 MiB cap (and as much compressed input waiting to be decoded) and the relay's own buffers.
# It measures 4 to 8 MiB; the meter that kept whole bodies grew by more than each body.
RSS_BOUND_KIB = 32 * 1024

BODY = b'{"model":"claude-sonnet-4-6","max_tokens":1024,"messages":[{"role":"user","content":"Hi"}]}'
STREAM_BODY = BODY[:-1] + b',"stream":true}'
MAX_TOKENS = 1024  # BODY's max_tokens


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class PeakRss:
    """The highest VmRSS of a process: sampled from a thread until the block ends, and by `sample`
    (the client calls it as the answer comes in, so there are samples during any transfer)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.kib = 0
        self.samples = 0

    def sample(self) -> None:
        self.kib = max(self.kib, _rss_kib(self._pid))
        self.samples += 1

    def _sample(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(0.002):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.kib = max(self.kib, _rss_kib(self._pid))


def _fetch(url: str, key: str, body: bytes, progress: Callable[[], None] | None = None) -> tuple[int, int, str]:
    """POST to buzz and read the whole answer, raw (never decompressed), keeping only its hash;
    `progress` is called after every `PROGRESS_BYTES` read."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        headers = {"x-api-key": key, "content-type": "application/json", "accept-encoding": "gzip"}
        conn.request("POST", "/v1/messages", body, headers)
        response = conn.getresponse()
        digest = hashlib.sha256()
        size = 0
        while piece := response.read(abuse.BLOCK):
            digest.update(piece)
            size += len(piece)
            if progress is not None and size % PROGRESS_BYTES < len(piece):
                progress()
        return response.status, size, digest.hexdigest()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def baseline(buzz_module: BuzzProcess, key: str, fake_session: FakeAnthropic) -> int:
    """buzz's VmRSS once it has served ordinary requests, streamed and not."""
    assert buzz_module.process is not None
    for body in (BODY, STREAM_BODY, BODY):
        status, _, _ = _fetch(buzz_module.url, key, body)
        assert status == 200
    return _rss_kib(buzz_module.process.pid)


@pytest.fixture
def relay(buzz: BuzzProcess, fake: FakeAnthropic, key: str, baseline: int) -> Iterator[Any]:
    """Relays one scripted answer; checks the bytes, the memory, and returns the ledger row."""
    assert buzz.process is not None
    pid = buzz.process.pid

    def run(reply: Reply, body: bytes, request_id: str) -> dict[str, Any]:
        fake.enqueue(reply)
        with PeakRss(pid) as peak:
            status, size, digest = _fetch(buzz.url, key, body, peak.sample)
        assert wait_until(fake.sent_bodies, timeout=30)
        [sent] = fake.sent_bodies()
        assert (status, size, digest) == (200, sent.size, sent.sha256)
        assert peak.samples >= size // PROGRESS_BYTES  # sampled all along, not only at the end
        assert peak.kib - baseline < RSS_BOUND_KIB, f"grew by {(peak.kib - baseline) // 1024} MiB"
        [row] = buzz.ledger(count=1, where=lambda r: r["upstream_request_id"] == request_id, timeout=30)
        row["relayed"] = size
        return row

    yield run


def test_a_huge_json_body_is_relayed_whole_and_billed_by_its_size(relay: Any) -> None:
    row = relay(abuse.huge_json_body(320 * MIB), BODY, "req_abuse_body")
    assert (row["status"], row["usage_source"], row["usage_note"]) == (200, "estimated", "body_over_cap")
    assert row["relayed"] > 320 * MIB
    # Input from the request; output from the body as relayed, about 4 bytes a token, but never
    # more than the request's max_tokens allows the vendor to bill.
    assert (row["input_tokens"], row["output_tokens"]) == (len(BODY) // 4, min(row["relayed"] // 4, MAX_TOKENS))
    assert row["cost_nanos"] > 0


def test_an_sse_line_that_never_ends_is_skipped(relay: Any) -> None:
    row = relay(abuse.endless_line(320 * MIB), STREAM_BODY, "req_abuse_line")
    assert (row["status"], row["usage_source"], row["usage_note"]) == (200, "estimated", "event_over_cap")
    assert row["input_tokens"] == 12  # from message_start, read before the line began
    assert row["output_tokens"] == MAX_TOKENS  # 80M tokens' worth of bytes, capped by max_tokens


def test_a_huge_event_is_skipped_and_the_events_after_it_are_read(relay: Any) -> None:
    row = relay(abuse.huge_event(200 * MIB, cache_read=777), STREAM_BODY, "req_abuse_event")
    assert (row["status"], row["usage_source"], row["usage_note"]) == (200, "estimated", "event_over_cap")
    # Only the final message_delta, after the huge event, carries cache reads.
    assert (row["input_tokens"], row["cache_read_tokens"]) == (12, 777)
    assert row["output_tokens"] == MAX_TOKENS


def test_a_gzip_bomb_is_relayed_compressed_and_not_inflated(relay: Any) -> None:
    reply = abuse.gzip_bomb(1024 * MIB)
    row = relay(reply, BODY, "req_abuse_bomb")
    assert (row["status"], row["usage_source"], row["usage_note"]) == (200, "estimated", "decoded_over_cap")
    assert row["relayed"] < 2 * MIB  # the client got the compressed bytes, as sent
    assert (row["input_tokens"], row["output_tokens"]) == (len(BODY) // 4, min(row["relayed"] // 4, MAX_TOKENS))


def test_a_flood_of_tiny_events_is_read_a_few_lines_at_a_time(relay: Any) -> None:
    row = relay(abuse.tiny_events(64 * MIB), STREAM_BODY, "req_abuse_tiny")
    assert (row["status"], row["usage_source"], row["usage_note"]) == (200, "estimated", "lines_over_cap")
    assert row["input_tokens"] == 12  # from message_start, read before the flood


def test_a_long_stream_sent_in_a_burst_is_read_whole(relay: Any, fake: FakeAnthropic) -> None:
    # 20,000 events in four writes: each chunk buzz reads holds more lines than the meter reads
    # per chunk, so it catches up after the last byte went out, and the vendor's usage is read.
    final = {"output_tokens": 20_000, "cache_read_input_tokens": 3}
    events = text_stream_events("claude-sonnet-4-6", ["tok "] * 20_000, {"input_tokens": 12, "output_tokens": 1}, final)
    data = b"".join(events)
    quarter = len(data) // 4 + 1
    pieces = [data[i : i + quarter] for i in range(0, len(data), quarter)]
    reply = Reply(headers=[("content-type", SSE_TYPE), ("request-id", "req_burst")], stream=lambda: iter(pieces))
    row = relay(reply, STREAM_BODY, "req_burst")
    assert (row["usage_source"], row["usage_note"]) == ("reported", None)
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (12, 20_000, 3)


def test_the_bomb_is_a_real_gzip_stream() -> None:
    import gzip
    import json

    start, repeated, times, end = abuse.gzip_bomb_parts(64 * MIB)
    message = json.loads(gzip.decompress(start + repeated * times + end))
    assert len(message["content"][0]["text"]) == 64 * MIB


def test_the_cap_is_the_operators_to_set(tmp_path: Path, fake: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake.url, env={"BUZZ_METER_MAX_BYTES": "4096"}) as process:
        key = process.create_key()
        usage = {"input_tokens": 12, "output_tokens": 1250}
        body = message_json("claude-sonnet-4-6", "a" * 5000, usage)
        fake.enqueue(Reply(body=body, headers=[("request-id", "req_small_cap")]))
        assert _fetch(process.url, key, BODY)[:2] == (200, len(body))
        [row] = process.ledger(count=1, where=lambda r: r["upstream_request_id"] == "req_small_cap")
        # A 5 KB body is over a 4 KiB cap: not read, so its reported 1250 tokens are not seen, and
        # its size (1,300-odd tokens' worth) is billed up to max_tokens.
        expected = ("estimated", "body_over_cap", MAX_TOKENS)
        assert (row["usage_source"], row["usage_note"], row["output_tokens"]) == expected
