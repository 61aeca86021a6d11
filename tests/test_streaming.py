"""Streams are relayed as they are produced, and the meter reads them without changing them."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import anthropic

from fakes.fake_anthropic import (
    FakeAnthropic,
    Reply,
    text_stream_events,
    thinking_stream_events,
    tool_use_stream_events,
)
from support import UPSTREAM_KEY, BuzzProcess

STREAM_BODY = b'{"model":"claude-sonnet-4-6","max_tokens":64,"stream":true,"messages":[]}'


async def _timed_read(url: str, key: str, body: bytes) -> list[tuple[float, bytes]]:
    pieces: list[tuple[float, bytes]] = []
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(f"{url}/v1/messages", data=body, headers={"x-api-key": key}) as response,
    ):
        assert response.status == 200
        async for chunk in response.content.iter_any():
            pieces.append((time.perf_counter(), chunk))
    return pieces


def _arrival_of_each(events: list[bytes], pieces: list[tuple[float, bytes]]) -> list[float]:
    """When the last byte of each event reached the client."""
    arrivals, received, end = [], 0, 0
    ends = []
    for event in events:
        end += len(event)
        ends.append(end)
    index = 0
    for at, chunk in pieces:
        received += len(chunk)
        while index < len(ends) and ends[index] <= received:
            arrivals.append(at)
            index += 1
    return arrivals


def test_each_event_arrives_when_it_is_sent_not_in_a_burst(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    events = text_stream_events(
        "claude-sonnet-4-6",
        ["one", " two", " three"],
        {"input_tokens": 10, "output_tokens": 1},
        {"output_tokens": 3},
    )
    delays = [0.0] + [0.1] * (len(events) - 1)
    fake.enqueue(Reply(chunks=events, delays=delays))
    pieces = asyncio.run(_timed_read(buzz.url, key, STREAM_BODY))
    assert b"".join(chunk for _, chunk in pieces) == b"".join(events)
    arrivals = _arrival_of_each(events, pieces)
    sent = fake.chunk_times()
    assert len(sent) == len(events) == len(arrivals)
    lags = [arrival - sent_at for arrival, sent_at in zip(arrivals, sent, strict=True)]
    # Each event reaches the client within a few ms of leaving the upstream...
    assert max(lags) < 0.02, lags
    # ...so the client sees the upstream's own 100 ms rhythm, not one burst at the end.
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.08, gaps


def test_sdk_stream_through_buzz_equals_direct(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    params = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 128,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    results = []
    for client in (
        anthropic.Anthropic(api_key=UPSTREAM_KEY, base_url=fake.url, max_retries=0),
        anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0),
    ):
        fake.enqueue(
            Reply(
                chunks=tool_use_stream_events(
                    "claude-sonnet-4-6",
                    text="Let me check.",
                    tool_name="get_weather",
                    input_json_pieces=['{"ci', 'ty": "Par', 'is"}'],
                    usage_start={"input_tokens": 377, "output_tokens": 1},
                    usage_final={"output_tokens": 65},
                )
            )
        )
        with client.messages.stream(**params) as stream:  # type: ignore[arg-type]
            final = stream.get_final_message()
        results.append(final)
    direct, through = results
    assert through.model_dump(exclude={"id"}) == direct.model_dump(exclude={"id"})
    assert through.content[1].type == "tool_use"
    assert through.content[1].input == {"city": "Paris"}
    assert through.usage.output_tokens == 65


def test_thinking_stream_with_signature_passes_through(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    events = thinking_stream_events(
        "claude-opus-4-8",
        thinking_pieces=["Simple", " question."],
        signature="c2lnbmF0dXJl",
        text_pieces=["Four."],
        usage_start={"input_tokens": 28, "output_tokens": 5},
        usage_final={"output_tokens": 547},
        pad=True,
    )
    fake.enqueue(Reply(chunks=events, headers=[("request-id", "req_thinking_1")]))
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)
    with client.messages.stream(
        model="claude-opus-4-8", max_tokens=2048, messages=[{"role": "user", "content": "2+2?"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking"
    assert final.content[0].signature == "c2lnbmF0dXJl"
    assert final.content[1].text == "Four."
    [row] = buzz.ledger(count=1, where=lambda r: r["upstream_request_id"] == "req_thinking_1")
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (28, 547, "reported")
