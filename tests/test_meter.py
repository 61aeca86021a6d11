"""The meter on real Anthropic bytes: any chunking, CRLF, padding, cumulative replace, gzip."""

from __future__ import annotations

import gzip
import random

import pytest

from buzz.billing.usage import Usage
from buzz.proxy.meter import Meter, SSEParser
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
