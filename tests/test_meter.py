"""The meter on real Anthropic bytes: any chunking, CRLF, padding, cumulative replace, gzip, and
answers too large to keep: bounded memory and work per chunk, estimates with a note."""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib

import pytest

from buzz.billing.usage import Usage
from buzz.config import METER_MAX_BYTES
from buzz.proxy.inflate import FEED_BUDGET
from buzz.proxy.meter import LINES_PER_FEED, Meter, SSEParser
from buzz.upstreams.anthropic import AnthropicUsage
from fakes.fake_anthropic import message_json, sse_event, text_stream_events

SSE = "text/event-stream; charset=utf-8"

START = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 5000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 1,
}
FINAL = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 5000,
    "output_tokens": 500,
}
EXPECTED = Usage(
    input_tokens=100,
    output_tokens=500,
    cache_write_5m_tokens=1000,
    cache_write_1h_tokens=2000,
    cache_read_tokens=5000,
)


def _meter(chunks: list[bytes], content_type: str = SSE, encoding: str = "", complete: bool = True) -> Meter:
    meter = Meter(AnthropicUsage(request_bytes=400), content_type, encoding)
    for chunk in chunks:
        meter.feed(chunk)
    return meter


def _split_randomly(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(40, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_stream_usage_under_any_chunking_and_line_ending(pad: bool, newline: bytes) -> None:
    events = text_stream_events("claude-sonnet-4-6", ["Hé", "llo ☕", " there"], START, FINAL, pad=pad)
    data = b"".join(events).replace(b"\n", newline)
    rng = random.Random(7)
    for _ in range(25):  # every split, including inside a UTF-8 character and inside CRLF
        result = _meter(_split_randomly(data, rng)).result(complete=True)
        assert result.usage == EXPECTED
        assert result.source == "reported"
        assert result.model == "claude-sonnet-4-6"
    one_byte_at_a_time = [data[i : i + 1] for i in range(len(data))]
    assert _meter(one_byte_at_a_time).result(complete=True).usage == EXPECTED


def test_message_delta_replaces_and_never_adds() -> None:
    events = [
        sse_event("message_start", {"type": "message_start", "message": {"model": "m", "usage": START}}),
        sse_event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 200}}),
        sse_event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 500, "input_tokens": 120}}),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    usage = _meter(events).result(complete=True).usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (120, 500)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (1000, 2000)


def test_writes_without_ttl_split_are_5m_and_a_grown_total_adds_to_5m() -> None:
    start = {"input_tokens": 1, "cache_creation_input_tokens": 300, "output_tokens": 1}
    events = [
        sse_event("message_start", {"type": "message_start", "message": {"model": "m", "usage": start}}),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    usage = _meter(events).result(complete=True).usage
    assert usage is not None and (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (300, 0)
    grown = [
        sse_event("message_start", {"type": "message_start", "message": {"model": "m", "usage": START}}),
        sse_event("message_delta", {"type": "message_delta", "usage": {"cache_creation_input_tokens": 3500}}),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    usage = _meter(grown).result(complete=True).usage
    assert usage is not None and (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (1500, 2000)


def test_cut_stream_is_estimated_from_what_was_seen() -> None:
    events = text_stream_events("claude-sonnet-4-6", ["a" * 400, "b" * 400], START, FINAL)
    usage_result = _meter(events[:-3]).result(complete=False)  # stopped before message_delta
    assert usage_result.source == "estimated"
    assert usage_result.usage is not None
    assert usage_result.usage.input_tokens == 100
    assert usage_result.usage.output_tokens >= 200  # ~800 bytes of text at ~4 bytes a token
    nothing = _meter([]).result(complete=False)
    assert nothing.source == "estimated"
    assert nothing.usage == Usage(input_tokens=100, output_tokens=0)  # 400 request bytes / 4


def test_json_body_plain_and_gzip_with_padding() -> None:
    body = message_json("claude-opus-4-8", "hi", START | {"output_tokens": 500})
    padded = body[:-1] + b"     }"
    for chunks, encoding in (
        ([padded], ""),
        (_split_randomly(gzip.compress(padded), random.Random(1)), "gzip"),
    ):
        result = _meter(chunks, "application/json", encoding).result(complete=True)
        assert result.usage == EXPECTED
        assert result.source == "reported"


def test_error_body_gives_its_type_and_no_usage() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}'
    result = _meter([body], "application/json").result(complete=True)
    assert (result.usage, result.source, result.error_type) == (None, "none", "overloaded_error")
    weird = b'{"type":"error","error":{"type":"Contains free text, so not kept","message":"x"}}'
    assert _meter([weird], "application/json").result(complete=True).error_type is None


def test_unreadable_answers_never_raise_and_are_billed_as_estimates() -> None:
    # The upstream answered, so it billed: a meter that cannot read the answer must not turn
    # that into a free request. It falls back to the request-size estimate, flagged as such.
    meter = _meter([b"event: message_start\ndata: {broken json\n\n"])
    result = meter.result(complete=True)
    assert (result.source, result.usage) == ("estimated", Usage(input_tokens=100))
    unknown_encoding = _meter([b"\x00\x01"], "application/json", "zstd-unknown").result(complete=True)
    assert (unknown_encoding.source, unknown_encoding.usage) == ("estimated", Usage(input_tokens=100))


def test_sse_parser_handles_comments_multiline_data_and_missing_final_blank_line() -> None:
    seen: list[tuple[bytes | None, bytes]] = []
    parser = SSEParser(lambda event, data: seen.append((event, data)))
    parser.feed(b": comment\nevent: a\ndata: 1\ndata:2\n\ndata: only-data\n\nevent: last\ndata: x")
    parser.close()
    assert seen == [(b"a", b"1\n2"), (None, b"only-data"), (b"last", b"x")]


# --- bounded memory and time, whatever the upstream sends -------------------------------------

CAP = METER_MAX_BYTES
CHUNK = 64 * 1024


def _usage_events(cache_read: int) -> list[bytes]:
    """The end of a stream: a final usage only these events carry (cache reads), then the stop."""
    final = {"output_tokens": 9, "cache_read_input_tokens": cache_read}
    return [
        sse_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": final}),
        sse_event("message_stop", {"type": "message_stop"}),
    ]


def _start() -> bytes:
    return sse_event("message_start", {"type": "message_start", "message": {"model": "m", "usage": START}})


def test_a_64_mb_line_fed_in_64_kib_chunks_keeps_at_most_the_cap() -> None:
    meter = Meter(AnthropicUsage(request_bytes=400), SSE, "")
    meter.feed(_start())
    meter.feed(b"event: content_block_delta\ndata: ")
    piece = b"x" * CHUNK
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(64 * 1024 * 1024 // CHUNK):
            meter.feed(piece)
            # Measured from outside the meter: nothing it allocated outgrew the cap.
            assert tracemalloc.get_traced_memory()[1] - before <= CAP + CHUNK
    finally:
        tracemalloc.stop()
    assert meter.retained == 0  # by its own account: the line is being dropped, not kept
    meter.feed(b"\n\n")  # the line, and its event, end at last
    for event in _usage_events(cache_read=5):
        meter.feed(event)
    result = meter.result(complete=True)
    assert (result.source, result.usage_note) == ("estimated", "event_over_cap")
    assert result.usage is not None
    # The final usage after the line was still read; the skipped line counts as output.
    assert result.usage.cache_read_tokens == 5
    assert result.usage.output_tokens >= 64 * 1024 * 1024 // 4


def _gzip_bomb(decoded: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    return b"".join(compressor.compress(zeros) for _ in range(decoded // len(zeros))) + compressor.flush()


@pytest.mark.parametrize("content_type", ["application/json", SSE])
def test_a_gzip_bomb_fed_in_chunks_never_decodes_more_than_a_feed_budget(content_type: str) -> None:
    bomb = _gzip_bomb(256 * 1024 * 1024)
    assert len(bomb) < 300 * 1024  # about a thousand to one
    meter = Meter(AnthropicUsage(request_bytes=400), content_type, "gzip")
    tracemalloc.start()
    try:
        decoded = 0
        for start in range(0, len(bomb), CHUNK):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            meter.feed(bomb[start : start + CHUNK])
            # What one feed allocated, seen from outside: a budget's worth, not 64 MiB of zeros...
            assert tracemalloc.get_traced_memory()[1] - before <= 2 * FEED_BUDGET
            # ...and what it decoded, by its own count.
            assert meter.decoded - decoded <= FEED_BUDGET
            decoded = meter.decoded
            assert meter.retained <= CAP
    finally:
        tracemalloc.stop()
    assert decoded < 8 * 1024 * 1024  # it gave up long before the gigabyte
    result = meter.result(complete=True)
    assert (result.source, result.usage_note) == ("estimated", "decoded_over_cap")
    assert result.usage is not None
    assert result.usage.input_tokens == 100
    if content_type == SSE:  # what was not decoded, and the unfinished line it did decode
        assert len(bomb) // 4 - 1024 <= result.usage.output_tokens <= (len(bomb) + decoded) // 4
    else:  # the body as relayed
        assert result.usage.output_tokens == len(bomb) // 4


def test_a_huge_event_is_skipped_and_the_next_events_usage_is_still_read() -> None:
    seen: list[bytes | None] = []
    rules = AnthropicUsage(request_bytes=400)
    on_event = rules.on_event
    rules.on_event = lambda event, data: (seen.append(event), on_event(event, data))[1]  # type: ignore[method-assign]
    meter = Meter(rules, SSE, "")
    meter.feed(_start())
    # One event whose data lines add up to more than the cap, each line small.
    line = b'data: "' + b"e" * 1000 + b'",\n'
    meter.feed(b'event: content_block_delta\ndata: {"padding":[\n')
    for _ in range((CAP + CHUNK) // len(line) + 1):
        meter.feed(line)
    meter.feed(b'data: "e"]}\n\n')
    for event in _usage_events(cache_read=4321):
        meter.feed(event)
    result = meter.result(complete=True)
    assert seen == [b"message_start", b"message_delta", b"message_stop"]  # the huge one never reached the rules
    assert (result.source, result.usage_note, result.model) == ("estimated", "event_over_cap", "m")
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.cache_read_tokens) == (100, 4321)
    assert result.usage.output_tokens >= CAP // 4  # the skipped event counted as output


def test_a_body_over_the_cap_is_billed_by_estimate_from_its_size_with_its_note() -> None:
    body = message_json("claude-opus-4-8", "a" * (4 * CAP), START | {"output_tokens": 500})
    meter = Meter(AnthropicUsage(request_bytes=400), "application/json", "")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, len(body), CHUNK):
            meter.feed(body[start : start + CHUNK])
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    result = meter.result(complete=True)
    # Input from the request (400 bytes), output from the body as relayed: about 4 bytes a token.
    assert (result.source, result.usage) == ("estimated", Usage(input_tokens=100, output_tokens=len(body) // 4))
    assert result.usage_note == "body_over_cap"
    assert peak <= CAP + 2 * CHUNK  # dropped as soon as it outgrew the cap (the test made each chunk)


def test_a_body_at_the_cap_is_still_read() -> None:
    body = message_json("claude-opus-4-8", "hi", START | {"output_tokens": 500})
    meter = Meter(AnthropicUsage(request_bytes=400), "application/json", "", max_bytes=len(body))
    meter.feed(body)
    result = meter.result(complete=True)
    assert (result.usage, result.source, result.usage_note) == (EXPECTED, "reported", None)


def test_an_error_body_over_the_cap_is_not_billed_and_keeps_its_note() -> None:
    meter = Meter(AnthropicUsage(request_bytes=400), "application/json", "", status=500, max_bytes=1000)
    meter.feed(b" " * 1001)
    result = meter.result(complete=True)
    assert (result.usage, result.source, result.usage_note) == (None, "none", "body_over_cap")


def test_a_large_legitimate_gzip_body_is_read_across_feeds_and_at_the_end() -> None:
    # 3 MiB of JSON text in one compressed chunk: more than one feed may decode, so the rest
    # waits, compressed, and is decoded when the answer ends.
    text = "".join(f"word{i} " for i in range(400_000))[: 3 * 1024 * 1024]
    body = message_json("claude-opus-4-8", text, START | {"output_tokens": 500})
    compressed = gzip.compress(body)
    meter = _meter([compressed], "application/json", "gzip")
    assert 0 < meter.decoded <= FEED_BUDGET
    result = meter.result(complete=True)
    assert (result.usage, result.source, result.usage_note) == (EXPECTED, "reported", None)


def test_a_model_repeating_itself_is_not_taken_for_a_bomb() -> None:
    # Streamed through a proxy that gzips each event as it goes (a sync flush per event).
    events = text_stream_events("claude-sonnet-4-6", ["the "] * 20_000, START, FINAL)
    compressor = zlib.compressobj(wbits=31)
    stream = [compressor.compress(e) + compressor.flush(zlib.Z_SYNC_FLUSH) for e in events]
    stream[-1] += compressor.flush()
    result = _meter(stream, SSE, "gzip").result(complete=True)
    assert (result.usage, result.source, result.usage_note) == (EXPECTED, "reported", None)
    # Not streamed: half a megabyte of one word compresses about 700 to 1, under the first MiB.
    body = message_json("claude-opus-4-8", "the " * 131_072, START | {"output_tokens": 500})
    compressed = gzip.compress(body)
    assert len(body) > 500 * len(compressed)
    result = _meter([compressed], "application/json", "gzip").result(complete=True)
    assert (result.usage, result.source, result.usage_note) == (EXPECTED, "reported", None)


def test_bytes_after_the_end_of_a_gzip_stream_are_neither_decoded_nor_kept() -> None:
    body = message_json("claude-opus-4-8", "hi", START | {"output_tokens": 500})
    meter = _meter([gzip.compress(body)], "application/json", "gzip")
    for _ in range(200):
        meter.feed(b"\x00" * CHUNK)
        assert meter.retained <= len(body)
    result = meter.result(complete=True)
    assert (result.usage, result.source) == (EXPECTED, "reported")


def _parse(
    chunks: list[bytes], max_bytes: int, grants: random.Random | None = None
) -> tuple[list[tuple[bytes | None, bytes]], list[int]]:
    """Events and skips; with `grants`, a random number of lines is allowed before each chunk."""
    events: list[tuple[bytes | None, bytes]] = []
    skipped: list[int] = []
    parser = SSEParser(lambda event, data: events.append((event, data)), max_bytes, skipped.append)
    for chunk in chunks:
        if grants is not None:
            parser.allow(grants.choice([0, 1, 2, 5, 50]))
        parser.feed(chunk)
        assert parser.buffered <= max_bytes
    parser.close()
    return events, skipped


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_events_over_the_cap_are_skipped_the_same_way_under_any_chunking(newline: bytes) -> None:
    rng = random.Random(11)
    events = []
    for i in range(60):
        size = rng.choice([0, 10, 90, 99, 100, 101, 150, 400])  # around a cap of 100
        lines = [b"data: " + bytes([97 + i % 26]) * size]
        if size > 50 and rng.random() < 0.5:  # the same size spread over two data lines
            half = size // 2
            lines = [b"data: " + b"b" * half, b"data:" + b"c" * (size - half - 1)]
        events.append(b"event: e%d\n" % i + b"".join(line + b"\n" for line in lines) + b": comment\n\n\n\n")
    data = b"".join(events).replace(b"\n", newline)
    expected, expected_skips = _parse([data], 100)
    assert expected and expected_skips
    for _ in range(20):
        assert _parse(_split_randomly(data, rng), 100) == (expected, expected_skips)
        # Read a few lines at a time, the rest waiting: still the same events and skips.
        assert _parse(_split_randomly(data, rng), 100, rng) == (expected, expected_skips)
    assert _parse([data[i : i + 1] for i in range(len(data))], 100) == (expected, expected_skips)
    assert all(len(payload) <= 100 for _, payload in expected)


def test_sse_line_endings_split_across_chunks() -> None:
    events, _ = _parse([b"data: a\r", b"\ndata: b\r", b"\r", b"data: c\r\n", b"\r\n", b"data: d"], 100)
    assert events == [(None, b"a\nb"), (None, b"c"), (None, b"d")]


def test_a_flood_of_blank_lines_changes_nothing() -> None:
    events, skips = _parse([b"data: 1\n" + b"\n" * 100_000 + b"data: 2\n\n", b"\r" * 1000, b"data: 3\n\n"], 100)
    assert (events, skips) == ([(None, b"1"), (None, b"2"), (None, b"3")], [])


def test_brotli_is_decoded_in_bounded_steps_too() -> None:
    brotli = pytest.importorskip("brotli")
    if not hasattr(brotli.Decompressor(), "can_accept_more_data"):
        pytest.skip("brotli before 1.2 cannot bound its output")
    words = " ".join(f"w{i}" for i in range(300_000))  # compresses a few times, like real text
    body = message_json("claude-opus-4-8", words, START | {"output_tokens": 500})
    compressed = brotli.compress(body)
    pieces = [compressed[i : i + 1000] for i in range(0, len(compressed), 1000)]
    result = _meter(pieces, "application/json", "br").result(complete=True)
    assert (result.usage, result.source) == (EXPECTED, "reported")
    events = text_stream_events("claude-sonnet-4-6", ["Hé", "llo"], START, FINAL)
    assert _meter([brotli.compress(b"".join(events))], SSE, "br").result(True).usage == EXPECTED
    bomb = brotli.compress(bytes(256 * 1024 * 1024), quality=5)
    meter = Meter(AnthropicUsage(request_bytes=400), "application/json", "br")
    decoded = 0
    for start in range(0, len(bomb), 1024):
        meter.feed(bomb[start : start + 1024])
        assert meter.decoded - decoded <= FEED_BUDGET + 32 * 1024  # brotli rounds its limit up
        decoded = meter.decoded
    assert meter.result(complete=True).usage_note == "decoded_over_cap"


class _Counting(AnthropicUsage):
    """Anthropic's rules, counting the events they were handed."""

    def __init__(self) -> None:
        super().__init__(request_bytes=400)
        self.events = 0

    def on_event(self, event: bytes | None, data: bytes) -> None:
        self.events += 1
        super().on_event(event, data)


@pytest.mark.parametrize("encoding", ["", "gzip"])
def test_a_flood_of_tiny_events_is_read_a_bounded_number_of_lines_per_chunk(encoding: str) -> None:
    flood = b"data:{}\n\n" * (CHUNK // 9)  # 7281 events, 14562 lines in one 64 KiB chunk
    rules = _Counting()
    meter = Meter(rules, SSE, encoding)
    compressor = zlib.compressobj(wbits=31)
    for _ in range(400):
        chunk = flood if not encoding else compressor.compress(flood) + compressor.flush(zlib.Z_SYNC_FLUSH)
        before = rules.events
        meter.feed(chunk)
        # Two lines an event: the parser read at most its lines for one chunk, not the 7281 events.
        assert rules.events - before <= LINES_PER_FEED // 2
        assert meter.retained <= CAP + CHUNK
    result = meter.result(complete=True)
    note = "lines_over_cap" if not encoding else "decoded_over_cap"  # compressed, the rest waits unread
    assert (result.source, result.usage_note) == ("estimated", note)


def test_a_long_stream_arriving_at_once_is_still_read_whole() -> None:
    # 20,000 events relayed in 256 KiB chunks, more lines each than one chunk's reading: the
    # rest waits and is read with the next chunks and at the end.
    events = text_stream_events("claude-sonnet-4-6", ["tok "] * 20_000, START, FINAL)
    data = b"".join(events)
    chunks = [data[i : i + 256 * 1024] for i in range(0, len(data), 256 * 1024)]
    assert data.count(b"\n") // len(chunks) > LINES_PER_FEED
    rules = _Counting()
    meter = Meter(rules, SSE, "")
    for chunk in chunks:
        before = rules.events
        meter.feed(chunk)
        assert rules.events - before <= LINES_PER_FEED
    steps = 0
    while meter.behind:  # as the relay does once the client has everything: a bounded step at a time
        before = rules.events
        meter.catch_up()
        assert rules.events - before <= LINES_PER_FEED
        steps += 1
    assert steps > 1
    result = meter.result(complete=True)
    assert (result.usage, result.source, result.usage_note) == (EXPECTED, "reported", None)
