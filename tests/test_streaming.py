"""Streams are relayed as they are produced, and the meter reads them without changing them."""

from __future__ import annotations

import socket
import threading

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


def test_each_event_reaches_the_client_before_the_next_leaves_the_upstream(
    buzz: BuzzProcess, fake: FakeAnthropic, key: str
) -> None:
    """The upstream sends each event only once the client has the one before: a gateway that
    buffered even one event would never let this stream finish."""
    events = text_stream_events(
        "claude-sonnet-4-6", ["one", " two", " three"], {"input_tokens": 10, "output_tokens": 1}, {"output_tokens": 3}
    )
    gates = [threading.Event() for _ in events]
    gates[0].set()
    fake.enqueue(Reply(chunks=events, gates=list(gates)))
    with socket.create_connection(("127.0.0.1", buzz.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + key.encode()
            + b"\r\ncontent-length: " + str(len(STREAM_BODY)).encode() + b"\r\n\r\n" + STREAM_BODY
        )  # fmt: skip
        received = b""
        for index, event in enumerate(events):
            while event not in received:  # a 30 s socket timeout ends a buffered stream's test
                chunk = sock.recv(65536)
                assert chunk, "the connection closed early"
                received += chunk
            # Nothing after this event can have been sent yet, so none of it may have arrived.
            assert all(later not in received for later in events[index + 1 :])
            if index + 1 < len(gates):
                gates[index + 1].set()


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
