"""The fake OpenAI and xAI upstreams, driven directly by the real openai SDK and raw aiohttp."""

from __future__ import annotations

import asyncio
import base64
import gzip
import itertools
import json
import struct
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx2
import openai
import pytest
from multidict import CIMultiDict
from openai.types.chat import ChatCompletionMessageParam

from fakes.fake_anthropic import FakeAnthropic
from fakes.fake_openai import (
    DONE,
    FakeOpenAI,
    FakeXAI,
    Reply,
    chat_completion_json,
    chat_stream_chunks,
    chat_stream_error_chunks,
    chat_usage,
    embeddings_json,
    fake_embedding,
    go_duration,
    openai_error_reply,
    response_json,
    responses_stream_events,
    responses_usage,
)
from support import wait_until

MODEL = "gpt-5.5"
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
TEXT = "Hello from the fake upstream."


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


@pytest.fixture
def fake(shared: FakeOpenAI) -> Iterator[FakeOpenAI]:
    shared.clear()
    shared.drain_replies()
    yield shared


@pytest.fixture
def client(fake: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0, timeout=5)


def raw(url: str, method: str = "POST", **kwargs: Any) -> tuple[int, CIMultiDict[str], bytes]:
    async def go() -> tuple[int, CIMultiDict[str], bytes]:
        async with (
            aiohttp.ClientSession(auto_decompress=False) as s,
            s.request(method, url, **kwargs) as resp,
        ):
            return resp.status, CIMultiDict(resp.headers), await resp.read()

    return asyncio.run(go())


def events(body: bytes) -> list[bytes]:
    """The `data:` payloads of an SSE body, split on blank lines."""
    return [line.removeprefix(b"data: ") for line in body.split(b"\n\n") if line]


def prompt_tokens(fake: FakeOpenAI) -> int:
    return len(fake.requests[-1].body) // 4


# Builders


def test_chat_stream_layout_and_purity() -> None:
    usage = chat_usage(10, 5)
    chunks = chat_stream_chunks(MODEL, ["a", "é"], usage)
    assert chunks == chat_stream_chunks(MODEL, ["a", "é"], usage)
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") and b"event:" not in c for c in chunks)
    assert chunks[-1] == DONE == b"data: [DONE]\n\n"
    parsed = [json.loads(c.removeprefix(b"data: ")) for c in chunks[:-1]]
    assert [p["choices"][0]["delta"] for p in parsed[:3]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "a"},
        {"content": "é"},
    ]
    assert "é".encode() in chunks[2]  # raw UTF-8
    assert parsed[3]["choices"][0]["finish_reason"] == "stop"
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"] == usage
    assert all(p["usage"] is None for p in parsed[:-1])
    no_usage = [json.loads(c.removeprefix(b"data: ")) for c in chat_stream_chunks(MODEL, ["a"], None)[:-1]]
    assert all(p["choices"] and p["usage"] is None for p in no_usage)
    merged = chat_stream_chunks(MODEL, ["a"], usage, usage_in_final_chunk=True)
    last = json.loads(merged[-2].removeprefix(b"data: "))
    assert last["choices"][0]["finish_reason"] == "stop" and last["usage"] == usage


def test_obfuscation_varies_and_error_chunks() -> None:
    chunks = chat_stream_chunks(MODEL, ["a", "bb", "ccc"], None, obfuscation=True)[:-1]
    widths = {len(json.loads(c.removeprefix(b"data: "))["obfuscation"]) for c in chunks}
    assert len(widths) > 1
    err = chat_stream_error_chunks(MODEL, ["x"], message="boom")
    assert err[-1] == (b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\n\n')
    assert DONE not in err and not any(b'"finish_reason":"stop"' in c for c in err)


def test_usage_semantics() -> None:
    assert chat_usage(10, 5, reasoning_tokens=2)["total_tokens"] == 15
    xai = chat_usage(10, 5, reasoning_tokens=2, cached_tokens=4, reasoning_separate=True)
    assert (xai["completion_tokens"], xai["total_tokens"]) == (5, 17)
    assert xai["prompt_tokens_details"]["cached_tokens"] == 4
    assert responses_usage(10, 5, reasoning_tokens=2, reasoning_separate=True)["total_tokens"] == 17


def test_json_builders() -> None:
    body = json.loads(chat_completion_json(MODEL, "hi", chat_usage(1, 1)))
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "hi"
    resp = json.loads(response_json(MODEL, "hi", responses_usage(1, 1)))
    assert resp["object"] == "response" and resp["output"][0]["content"][0]["text"] == "hi"
    emb = json.loads(embeddings_json("e", [[0.5, -0.25]], 3, encoding_format="base64"))
    assert struct.unpack("<2f", base64.b64decode(emb["data"][0]["embedding"])) == (0.5, -0.25)
    assert emb["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [go_duration(s) for s in (0.012, 1, 1.5, 360)] == ["12ms", "1s", "1.5s", "6m0s"]


def test_responses_stream_layout() -> None:
    out = responses_stream_events(MODEL, ["a", "b"], responses_usage(1, 1))
    names = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in out]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert names.count("response.output_text.delta") == 2
    payloads = [json.loads(e.split(b"\ndata: ")[1]) for e in out]
    assert [p["sequence_number"] for p in payloads] == list(range(len(out)))
    assert all(p["type"] == n for p, n in zip(payloads, names, strict=True))
    assert payloads[0]["response"]["usage"] is None
    assert [p for p in payloads if "usage" in p.get("response", {}) and p["response"]["usage"]] == [payloads[-1]]


# The SDK against the default behaviour


def test_sdk_chat_create(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=HI)
    rec = fake.requests[-1]
    assert (rec.method, rec.path, rec.query_string) == ("POST", "/v1/chat/completions", "")
    assert rec.header("authorization") == "Bearer sk-test" and rec.json()["messages"] == HI
    assert resp.model == MODEL and resp.choices[0].message.content == TEXT
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt_tokens(fake), 5)
    assert resp.usage.total_tokens == prompt_tokens(fake) + 5
    assert resp.usage.prompt_tokens_details is not None and resp.usage.prompt_tokens_details.cached_tokens == 0
    assert resp.usage.completion_tokens_details is not None
    assert resp.usage.completion_tokens_details.reasoning_tokens == 0


def test_sdk_chat_cache_key_and_reasoning_model(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="o4-mini", messages=HI, prompt_cache_key="tenant-1")
    usage = resp.usage
    assert usage is not None and usage.prompt_tokens_details and usage.completion_tokens_details
    assert usage.prompt_tokens_details.cached_tokens == prompt_tokens(fake) // 2
    assert usage.completion_tokens_details.reasoning_tokens == 2
    assert usage.completion_tokens == 5 and usage.total_tokens == usage.prompt_tokens + 5


def test_sdk_chat_stream_without_include_usage(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT
    assert all(c.usage is None and c.choices for c in chunks)
    status, headers, body = raw(fake.url + "/v1/chat/completions", json={"model": MODEL, "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert body.endswith(b"\n\ndata: [DONE]\n\n") and b"event:" not in body
    parsed = [json.loads(e) for e in events(body)[:-1]]
    assert all(p["usage"] is None and p["choices"] for p in parsed)
    assert all("obfuscation" in p for p in parsed)  # OpenAI's default padding


def test_sdk_chat_stream_with_include_usage(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HI,
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
    )
    chunks = list(stream)
    assert fake.requests[-1].json()["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    *text_chunks, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (prompt_tokens(fake), 5)
    assert all(c.usage is None for c in text_chunks)
    # One write per event, [DONE] included. The SDK stops at [DONE] without waiting for the end
    # of the body, so the fake may note that last write's time just after the stream returned.
    assert wait_until(lambda: len(fake.chunk_times()) == len(chunks) + 1)


def test_sdk_chat_stream_helper_final_usage(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=MODEL, messages=HI, stream_options={"include_usage": True}, prompt_cache_key="k"
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == TEXT
    assert final.usage is not None and final.usage.prompt_tokens_details is not None
    assert final.usage.prompt_tokens_details.cached_tokens == prompt_tokens(fake) // 2


def test_sdk_responses_create(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    resp = client.responses.create(model="o4-mini", input="hi", prompt_cache_key="k")
    assert fake.requests[-1].path == "/v1/responses"
    assert resp.output_text == TEXT and resp.model == "o4-mini" and resp.status == "completed"
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (prompt_tokens(fake), 5)
    assert resp.usage.input_tokens_details.cached_tokens == prompt_tokens(fake) // 2
    assert resp.usage.output_tokens_details.reasoning_tokens == 2
    assert resp.usage.total_tokens == prompt_tokens(fake) + 5


def test_sdk_responses_stream(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == TEXT and final.output_text == TEXT
    assert final.usage is not None and final.usage.input_tokens == prompt_tokens(fake)
    raw_events = list(client.responses.create(model=MODEL, input="hi", stream=True))
    assert raw_events[0].type == "response.created" and raw_events[0].response.usage is None
    assert raw_events[-1].type == "response.completed" and raw_events[-1].response.usage is not None
    _, _, body = raw(fake.url + "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True})
    blocks = [b for b in body.split(b"\n\n") if b]
    assert all(b.startswith(b"event: response.") and b"\ndata: {" in b for b in blocks)
    assert b"[DONE]" not in body


def test_sdk_embeddings_default_base64(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    resp = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    sent = fake.requests[-1].json()
    assert fake.requests[-1].path == "/v1/embeddings"
    assert sent["encoding_format"] == "base64"  # openai 3.57 asks for base64 unless told otherwise
    assert [d.index for d in resp.data] == [0, 1] and len(resp.data[0].embedding) == 8
    assert resp.data[1].embedding == fake_embedding(repr("two"), 8)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == prompt_tokens(fake)


def test_sdk_embeddings_float_and_dimensions(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    resp = client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float", dimensions=3)
    assert len(resp.data) == 1 and len(resp.data[0].embedding) == 3
    _, _, body = raw(fake.url + "/v1/embeddings", json={"model": "m", "input": [1, 2, 3]})
    parsed = json.loads(body)
    assert parsed["object"] == "list" and isinstance(parsed["data"][0]["embedding"], list)
    assert len(parsed["data"]) == 1  # one token array is one input


def test_sdk_models(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert [m.id for m in models][:2] == ["gpt-5.5", "gpt-5.5-mini"]
    assert models[0].object == "model" and models[0].owned_by == "system"
    assert client.models.retrieve("o4-mini").id == "o4-mini"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-0")
    assert info.value.code == "model_not_found"


def test_sdk_rate_limit_error(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.enqueue(openai_error_reply(429, "requests", "slow down", "rate_limit_exceeded", retry_after=7))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=HI)
    err = info.value
    assert (err.type, err.code, err.param) == ("requests", "rate_limit_exceeded", None)
    assert err.body == {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    headers = err.response.headers
    assert headers["retry-after"] == "7" and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "7s"
    assert err.request_id is not None and err.request_id.startswith("req_") and len(err.request_id) == 36
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("scenario", "error", "code"),
    [
        ("error-400", openai.BadRequestError, "context_length_exceeded"),
        ("error-401", openai.AuthenticationError, "invalid_api_key"),
        ("error-429", openai.RateLimitError, "rate_limit_exceeded"),
        ("error-500", openai.InternalServerError, None),
        ("error-503", openai.InternalServerError, None),
    ],
)
def test_error_scenarios(client: openai.OpenAI, scenario: str, error: type[openai.APIStatusError], code: str) -> None:
    with pytest.raises(error) as info:
        client.embeddings.create(model="m", input="x", extra_headers={"x-fake-scenario": scenario})
    assert info.value.code == code
    body = info.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}


def test_midstream_error(client: openai.OpenAI) -> None:
    seen: list[str] = []
    stream = client.chat.completions.create(
        model=MODEL, messages=HI, stream=True, extra_headers={"x-fake-scenario": "midstream-error"}
    )
    with pytest.raises(openai.APIError, match="server had an error"):
        seen.extend(c.choices[0].delta.content or "" for c in stream)
    assert "".join(seen) == "Hello from"
    events_ = list(
        client.responses.create(
            model=MODEL, input="hi", stream=True, extra_headers={"x-fake-scenario": "midstream-error"}
        )
    )
    assert events_[-1].type == "error" and not any(e.type == "response.completed" for e in events_)


def test_default_headers_and_request_id(fake: FakeOpenAI) -> None:
    status, headers, _ = raw(fake.url + "/v1/chat/completions", json={"model": MODEL})
    assert status == 200 and headers["x-request-id"].startswith("req_")
    assert headers["openai-version"] == "2020-10-01" and headers["x-ratelimit-reset-tokens"] == "9ms"
    fake.enqueue(Reply(body=b"{}", headers=[("x-request-id", "req_mine")]))
    assert raw(fake.url + "/anything")[1]["x-request-id"] == "req_mine"


def test_bad_requests_and_unknown_paths(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", body={"messages": []}, cast_to=object)
    assert info.value.param == "model"
    status, _, body = raw(fake.url + "/v1/chat/completions", data=b"{nope")
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    status, _, body = raw(fake.url + "/v1/messages")
    assert status == 404 and json.loads(body)["error"]["message"] == "Invalid URL (POST /v1/messages)"


@pytest.mark.parametrize("prefix", ["/v1", "/v1beta/openai", "/api/openai/v1"])
def test_any_path_prefix(fake: FakeOpenAI, prefix: str) -> None:
    client = openai.OpenAI(base_url=fake.url + prefix, api_key="k", max_retries=0, timeout=5)
    assert client.chat.completions.create(model="claude-sonnet-4-6", messages=HI).model == "claude-sonnet-4-6"
    assert client.embeddings.create(model="m", input="x").data
    assert list(client.models.list())
    assert [r.path for r in fake.requests] == [f"{prefix}/chat/completions", f"{prefix}/embeddings", f"{prefix}/models"]


def test_usage_in_final_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-scenario": "usage-in-final-chunk"},
    )
    last = list(stream)[-1]
    assert last.choices[0].finish_reason == "stop" and last.usage is not None


def test_reasoning_separate_scenario(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    headers = {"x-fake-scenario": "reasoning-separate"}
    usage = client.chat.completions.create(model="grok-4-reasoning", messages=HI, extra_headers=headers).usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert (usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens) == (5, 2)
    assert usage.total_tokens == prompt_tokens(fake) + 7


def test_fake_xai() -> None:
    with FakeXAI() as xai:
        client = openai.OpenAI(base_url=xai.url + "/v1", api_key="xai-k", max_retries=0, timeout=5)
        usage = client.chat.completions.create(model="grok-4-fast-reasoning", messages=HI).usage
        assert usage is not None and usage.total_tokens == len(xai.requests[-1].body) // 4 + 7
        plain = client.chat.completions.create(model="grok-4", messages=HI).usage
        assert plain is not None and plain.total_tokens == plain.prompt_tokens + 5
        resp = client.responses.create(model="grok-4-fast-reasoning", input="hi")
        assert resp.usage is not None and resp.usage.total_tokens == resp.usage.input_tokens + 7
        models = list(client.models.list())
        assert models[0].id == "grok-4" and models[0].owned_by == "xai"
        assert xai.requests[0].header("authorization") == "Bearer xai-k"


def test_gzip_slow_and_drop(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=HI, extra_headers={"x-fake-scenario": "gzip"})
    assert resp.choices[0].message.content == TEXT
    _, headers, body = raw(
        fake.url + "/v1/chat/completions", json={"model": MODEL}, headers={"x-fake-scenario": "gzip"}
    )
    assert headers["Content-Encoding"] == "gzip" and json.loads(gzip.decompress(body))["model"] == MODEL
    slow = {"x-fake-scenario": "slow"}
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model=MODEL, messages=HI, stream=True, extra_headers=slow)
    )
    assert text == TEXT
    assert all(b - a > 0.08 for a, b in itertools.pairwise(fake.chunk_times()))
    # Unlike anthropic's, the openai SDK wraps a transport error raised while a stream is read.
    with pytest.raises(openai.APIConnectionError) as info:
        list(
            client.chat.completions.create(
                model=MODEL, messages=HI, stream=True, extra_headers={"x-fake-scenario": "drop"}
            )
        )
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)


def test_fake_anthropic_serves_its_openai_layer() -> None:
    with FakeAnthropic() as anthropic_fake:
        client = openai.OpenAI(base_url=anthropic_fake.url + "/v1/", api_key="sk-ant-k", max_retries=0, timeout=5)
        resp = client.chat.completions.create(model="claude-sonnet-4-6", messages=HI)
        assert resp.model == "claude-sonnet-4-6" and resp.choices[0].message.content == TEXT
        assert resp.usage is not None and resp.usage.prompt_tokens == len(anthropic_fake.requests[-1].body) // 4
        assert resp.usage.prompt_tokens_details is None and resp.usage.completion_tokens_details is None
        stream = client.chat.completions.create(
            model="claude-sonnet-4-6", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        assert list(stream)[-1].usage is not None
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(
                model="claude-sonnet-4-6", messages=HI, extra_headers={"x-fake-scenario": "error-429"}
            )
        assert info.value.code == "rate_limit_exceeded"  # OpenAI's envelope, as the layer answers
        assert anthropic_fake.requests[0].header("authorization") == "Bearer sk-ant-k"
