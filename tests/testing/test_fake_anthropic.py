"""The fake Anthropic upstream, driven directly by the real SDK and a raw aiohttp client."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam

from fakes.fake_anthropic import (
    FakeAnthropic,
    Reply,
    cloudflare_413_reply,
    error_reply,
    midstream_error_events,
    rechunk,
    sse_event,
    text_stream_events,
    thinking_stream_events,
    tool_use_stream_events,
    usage_dict,
)
from support import wait_until

MODEL = "claude-sonnet-4-6"
HI: list[MessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as f:
        yield f


@pytest.fixture
def client(fake: FakeAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="sk-test", max_retries=0, timeout=5)


def raw(url: str, method: str = "POST", **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        async with (
            aiohttp.ClientSession(auto_decompress=False) as s,
            s.request(method, url, **kwargs) as resp,
        ):
            return resp.status, dict(resp.headers), await resp.read()

    return asyncio.run(go())


def test_sse_event_bytes() -> None:
    assert sse_event("message_stop", {"type": "message_stop"}) == (
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert sse_event("x", b"{}") == b"event: x\ndata: {}\n\n"
    padded = sse_event("message_stop", {"type": "message_stop"}, pad=True)
    assert padded.startswith(b'event: message_stop\ndata: {"type":"message_stop" ')
    assert json.loads(padded.split(b"data: ")[1]) == {"type": "message_stop"}


def test_builders_are_pure() -> None:
    def build() -> list[bytes]:
        pieces = ['{"a"', ":1}"]
        return [
            *text_stream_events(MODEL, ["x"], usage_dict(1, 1), {"output_tokens": 1}, pad=True),
            *tool_use_stream_events(MODEL, "t", "f", pieces, usage_dict(1, 1), {"output_tokens": 1}, pad=True),
            *thinking_stream_events(MODEL, ["h"], "s", ["x"], usage_dict(1, 1), {"output_tokens": 1}, pad=True),
            *midstream_error_events(MODEL, ["x"], usage_dict(1, 1), pad=True),
        ]

    assert build() == build()
    widths = {len(e) - len(e.rstrip(b"}\n").rstrip(b" ")) for e in build() if b"ping" not in e}
    assert len(widths) > 3  # the padding varies from event to event


def test_text_stream_layout() -> None:
    events = text_stream_events(MODEL, ["a", "é"], usage_dict(3, 1), {"output_tokens": 2})
    names = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[2] == b'event: ping\ndata: {"type": "ping"}\n\n'
    assert "é".encode() in events[4]  # raw UTF-8, not \u escapes
    for e in events:
        data = json.loads(e.split(b"\ndata: ")[1])
        assert data["type"] == e.split(b"\n")[0].removeprefix(b"event: ").decode()


def test_sdk_non_stream_with_cache_split(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    system: Any = [
        {"type": "text", "text": "rules " * 50, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "more", "cache_control": {"type": "ephemeral"}},
    ]
    msg = client.messages.create(model=MODEL, max_tokens=10, system=system, messages=HI)
    body = fake.requests[-1].body
    assert msg.model == MODEL
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello from the fake upstream."
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == len(body) // 4
    assert msg.usage.output_tokens == 5
    cached = len(body) // 8
    assert msg.usage.cache_creation_input_tokens == cached
    assert msg.usage.cache_creation is not None
    assert msg.usage.cache_creation.ephemeral_1h_input_tokens == cached // 2
    assert msg.usage.cache_creation.ephemeral_5m_input_tokens == cached - cached // 2
    assert msg.usage.cache_read_input_tokens == 0


def test_sdk_stream_text_and_usage(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=10, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake upstream."
    assert final.usage.output_tokens == 5
    assert final.usage.input_tokens == len(fake.requests[-1].body) // 4


def test_sdk_parses_events_split_mid_character(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    events = text_stream_events(MODEL, ["héé", "llo"], usage_dict(3, 1), {"output_tokens": 2}, pad=True)
    chunks = rechunk(events, 7)
    assert b"".join(chunks) == b"".join(events) and len(chunks) > 20
    fake.enqueue(Reply(chunks=chunks, delays=[0.001] * len(chunks)))
    with client.messages.stream(model=MODEL, max_tokens=10, messages=HI) as stream:
        assert "".join(stream.text_stream) == "hééllo"


def test_sdk_stream_tool_use(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    events = tool_use_stream_events(
        MODEL,
        "Checking.",
        "get_weather",
        ['{"locati', 'on": "P', "ar", 'is"}'],
        usage_dict(9, 1),
        {"output_tokens": 65},
    )
    assert b'"partial_json":""' in events[6]  # the empty first piece is added
    fake.enqueue(Reply(chunks=events))
    with client.messages.stream(model=MODEL, max_tokens=10, messages=HI) as stream:
        final = stream.get_final_message()
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.input == {"location": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 65


def test_scenario_tool_use_uses_first_tool(client: anthropic.Anthropic) -> None:
    tools: Any = [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}]
    headers = {"x-fake-scenario": "tool_use"}
    msg = client.messages.create(model=MODEL, max_tokens=10, messages=HI, tools=tools, extra_headers=headers)
    assert msg.content[1].type == "tool_use" and msg.content[1].name == "lookup"
    with client.messages.stream(model=MODEL, max_tokens=10, messages=HI, tools=tools, extra_headers=headers) as s:
        final = s.get_final_message()
    assert final.content[1].type == "tool_use" and final.content[1].input == {"city": "Paris"}


def test_sdk_stream_thinking_padded(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    start = usage_dict(28, 5, cache_write_1h=100)
    final_usage = {"input_tokens": 28, "output_tokens": 547, "output_tokens_details": {"thinking_tokens": 40}}
    events = thinking_stream_events(MODEL, ["Simple", " educ"], "c2ln", ["Hi", "!"], start, final_usage, pad=True)
    fake.enqueue(Reply(chunks=events))
    with client.messages.stream(model=MODEL, max_tokens=10, messages=HI) as stream:
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.thinking == "Simple educ" and thinking.signature == "c2ln"
    assert text.type == "text" and text.text == "Hi!"
    assert final.usage.output_tokens == 547
    assert final.usage.cache_creation is not None and final.usage.cache_creation.ephemeral_1h_input_tokens == 100


def test_sdk_rate_limit_429(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.enqueue(error_reply(429, "rate_limit_error", "slow down", retry_after=7))
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    err = info.value
    assert err.response.headers["retry-after"] == "7"
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert err.request_id == err.body["request_id"]  # type: ignore[index]
    assert err.body["error"] == {"type": "rate_limit_error", "message": "slow down"}  # type: ignore[index]


def test_sdk_overloaded_529(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.enqueue(error_reply(529, "overloaded_error", "Overloaded"))
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert info.value.status_code == 529
    assert info.value.type == "overloaded_error"


def test_sdk_cloudflare_413(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.enqueue(cloudflare_413_reply())
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert info.value.status_code == 413
    assert "request-id" not in info.value.response.headers


def test_sdk_midstream_error(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    events = midstream_error_events(MODEL, ["Hel", "lo"], usage_dict(3, 1))
    assert events[-1] == (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    )
    fake.enqueue(Reply(chunks=events))
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(model=MODEL, max_tokens=10, messages=HI) as stream,
    ):
        seen.extend(stream.text_stream)
    assert seen == ["Hel", "lo"]
    assert info.value.type == "overloaded_error"


def test_gzip_body_decoded_by_sdk_and_raw_on_wire(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model=MODEL, max_tokens=10, messages=HI, extra_headers={"x-fake-scenario": "gzip"})
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello from the fake upstream."
    status, headers, body = raw(fake.url + "/v1/messages", json={"model": MODEL}, headers={"x-fake-scenario": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert body[:2] == b"\x1f\x8b" and int(headers["Content-Length"]) == len(body)
    assert json.loads(gzip.decompress(body))["model"] == MODEL


def test_gzip_stream_decoded_by_sdk(client: anthropic.Anthropic) -> None:
    headers = {"x-fake-scenario": "gzip,pad"}
    with client.messages.stream(model=MODEL, max_tokens=10, messages=HI, extra_headers=headers) as stream:
        assert "".join(stream.text_stream) == "Hello from the fake upstream."


def test_recording_is_exact(fake: FakeAnthropic) -> None:
    body = b'{ "model" : "claude-x",\n "messages": [], "note": "\xc3\xa9\\u00e9" }  '
    status, headers, reply = raw(
        fake.url + "/v1/messages?beta=true",
        data=body,
        headers={"X-Api-Key": "sk-ant-1", "anthropic-beta": "a,b", "Content-Type": "application/json"},
    )
    assert status == 200 and headers["request-id"].startswith("req_")
    assert json.loads(reply)["model"] == "claude-x"
    (rec,) = fake.requests
    assert (rec.method, rec.path, rec.query_string, rec.body) == ("POST", "/v1/messages", "beta=true", body)
    assert (b"X-Api-Key", b"sk-ant-1") in rec.raw_headers  # case as sent
    assert rec.header("x-api-key") == "sk-ant-1" and rec.header("ANTHROPIC-BETA") == "a,b"
    assert rec.header("missing") is None
    fake.clear()
    assert fake.requests == []


def test_raw_head_and_header_whitespace_as_sent(fake: FakeAnthropic) -> None:
    first = (
        b"POST /v1/messages/count_tokens?beta=true HTTP/1.1\r\nHost: x\r\nX-Odd:   two  spaces  \r\n"
        b'Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\n{"a\r\n3\r\n":1\r\n1\r\n}\r\n0\r\n\r\n'
    )
    second = b"POST /v1/messages/count_tokens HTTP/1.1\r\nHost: x\r\nx-tight:v\r\nContent-Length: 2\r\n\r\n{}"
    with socket.create_connection(("127.0.0.1", fake.port)) as conn:
        conn.sendall(first + second)  # pipelined on one connection
        received = b""
        while received.count(b"HTTP/1.1 200") < 2:
            received += conn.recv(65536)
    a, b = fake.requests
    assert a.raw_head == first[: first.index(b"\r\n\r\n") + 4] and a.body == b'{"a":1}'
    assert a.header("x-odd") == "  two  spaces  " and a.query_string == "beta=true"
    assert b.raw_head == second[:-2] and b.body == b"{}"
    assert b.raw_headers == ((b"Host", b"x"), (b"x-tight", b"v"), (b"Content-Length", b"2"))


def test_sdk_request_is_recorded(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    rec = fake.requests[-1]
    assert rec.json() == {"model": MODEL, "max_tokens": 10, "messages": HI}
    assert rec.header("authorization") == "Bearer sk-test"
    assert rec.header("anthropic-version") is not None


def test_queue_is_fifo_then_default(fake: FakeAnthropic) -> None:
    fake.enqueue(Reply(status=500))
    assert [r.status for r in fake.drain_replies()] == [500] and fake.pending_replies == 0
    fake.enqueue(Reply(status=201, body=b'{"a":1}'), Reply(body=b'{"b":2}', headers=[("request-id", "req_mine")]))
    assert fake.pending_replies == 2
    assert raw(fake.url + "/x")[::2] == (201, b'{"a":1}')
    status, headers, body = raw(fake.url + "/x")
    assert (status, body, headers["request-id"]) == (200, b'{"b":2}', "req_mine")
    status, _, body = raw(fake.url + "/x")
    assert status == 404
    assert json.loads(body)["error"] == {"type": "not_found_error", "message": "Not Found"}


def test_default_routes(client: anthropic.Anthropic) -> None:
    assert client.messages.count_tokens(model=MODEL, messages=HI).input_tokens > 0
    models = list(client.models.list())
    assert [m.id for m in models][:1] == ["claude-opus-4-8"]
    assert client.models.retrieve("claude-sonnet-4-6").display_name == "Claude Sonnet 4.6"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(anthropic.BadRequestError):
        client.post("/v1/messages", body={"no": "model"}, cast_to=object)


def test_model_list_pages_with_anthropics_cursors() -> None:
    models = [(f"claude-m{i}", f"M {i}") for i in range(5)]
    with FakeAnthropic(models=models) as fake:

        def page(query: str) -> tuple[int, Any]:
            status, _, body = raw(f"{fake.url}/v1/models?{query}", "GET")
            return status, json.loads(body)

        _, first = page("limit=2")
        assert [m["id"] for m in first["data"]] == ["claude-m0", "claude-m1"]
        assert (first["has_more"], first["first_id"], first["last_id"]) == (True, "claude-m0", "claude-m1")
        _, last = page("limit=2&after_id=claude-m3")
        assert ([m["id"] for m in last["data"]], last["has_more"]) == (["claude-m4"], False)
        _, before = page("limit=2&before_id=claude-m3")
        assert ([m["id"] for m in before["data"]], before["has_more"]) == (["claude-m1", "claude-m2"], True)
        _, everything = page("")
        assert len(everything["data"]) == 5 and everything["has_more"] is False  # 20 by default
        for query in ("limit=0", "limit=1001", "limit=x", "after_id=a&before_id=b"):
            status, error = page(query)
            assert (status, error["error"]["type"]) == (400, "invalid_request_error"), query


def test_chunk_timing(fake: FakeAnthropic) -> None:
    fake.enqueue(Reply(chunks=[b"one", b"two", b"three"], delays=[0, 0.1, 0.1]))

    async def go() -> bytes:
        async with aiohttp.ClientSession() as s, s.post(fake.url + "/v1/messages") as resp:
            return await resp.read()

    assert asyncio.run(go()) == b"onetwothree"
    sent = fake.chunk_times()
    # Each chunk is written only after its delay: a sleep never ends early, so these hold on any machine.
    assert len(sent) == 3 and all(b - a >= 0.1 for a, b in itertools.pairwise(sent))


def test_drop_after_chunks(fake: FakeAnthropic) -> None:
    fake.enqueue(Reply(chunks=[b"a", b"b", b"c"], delays=[0, 0.05, 0.05], drop_after_chunks=1))

    async def go() -> list[bytes]:
        got = []
        async with aiohttp.ClientSession() as s, s.post(fake.url + "/v1/messages") as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in resp.content.iter_any():
                    got.append(chunk)
        return got

    assert asyncio.run(go()) == [b"a"]


def test_scenario_drop_breaks_sdk_stream(client: anthropic.Anthropic) -> None:
    # The SDK does not wrap errors raised while a stream is read: its transport's error surfaces.
    with (
        pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"),
        client.messages.stream(
            model=MODEL, max_tokens=10, messages=HI, extra_headers={"x-fake-scenario": "drop"}
        ) as stream,
    ):
        stream.get_final_message()


def test_reset_before_headers(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.enqueue(Reply(reset_before_headers=True))
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert len(fake.requests) == 1


def test_hang_times_out_and_stop_is_prompt() -> None:
    fake = FakeAnthropic()
    fake.start()
    fake.enqueue(Reply(hang=True))
    client = anthropic.Anthropic(base_url=fake.url, api_key="k", max_retries=0, timeout=0.3)
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    # A hang that is still open when the fake stops must not hold stop() up.
    conn = socket.create_connection(("127.0.0.1", fake.port))
    conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-fake-scenario: hang\r\n\r\n")
    assert wait_until(lambda: len(fake.requests) == 2)
    fake.stop()  # returns although a hang is still open (the test's timeout would catch it not doing so)
    conn.close()


def test_standalone_cli_serves_and_stops() -> None:
    root = Path(__file__).resolve().parents[2]  # the repository, where `fakes` lives
    with subprocess.Popen(
        [sys.executable, "-m", "fakes.fake_anthropic", "--port", "0", "--workers", "2"],
        stdout=subprocess.PIPE,
        cwd=root,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            status, _, body = raw(url + "/v1/messages", json={"model": MODEL, "stream": True})
        finally:
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(timeout=60)
    assert status == 200 and body.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert exit_code == 0


def test_ticks_stream_a_hundred_deltas_fifty_milliseconds_apart(fake: FakeAnthropic) -> None:
    headers = {"x-fake-scenario": "ticks"}
    status, _, body = raw(fake.url + "/v1/messages", json={"model": MODEL, "stream": True}, headers=headers)
    assert status == 200
    assert body.count(b"event: content_block_delta") == 100 and body.count(b'"text":" tick"') == 100
    events = body.count(b"\n\nevent: ") + 1
    sent = fake.chunk_times()
    # One write per event, each 50 ms or more after the last: a sleep never ends early.
    assert len(sent) == events and all(b - a >= 0.05 for a, b in itertools.pairwise(sent))
