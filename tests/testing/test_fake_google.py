"""The fake Gemini upstream, driven directly by the real google-genai SDK, the openai SDK (for
Gemini's OpenAI layer) and raw aiohttp (for the framing the SDK never asks for)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest
from google import genai
from google.genai import errors, types
from multidict import CIMultiDict

from fakes.fake_google import (
    FakeGoogle,
    Reply,
    google_error_reply,
    json_array_chunks,
    sse_events,
    stream_generate_content_array,
    stream_generate_content_events,
    usage_metadata,
)

MODEL = "gemini-2.5-flash"
TEXT = "Hello from the fake upstream."
STREAM_PATH = f"/v1beta/models/{MODEL}:streamGenerateContent"


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeGoogle]:
    with FakeGoogle() as f:
        yield f


@pytest.fixture
def fake(shared: FakeGoogle) -> Iterator[FakeGoogle]:
    shared.clear()
    shared.drain_replies()
    yield shared


def make_client(fake: FakeGoogle, api_version: str | None = None, **headers: str) -> genai.Client:
    options = types.HttpOptions(base_url=fake.url, api_version=api_version, headers=headers or None)
    return genai.Client(api_key="AIza-test", http_options=options)


@pytest.fixture
def client(fake: FakeGoogle, monkeypatch: pytest.MonkeyPatch) -> genai.Client:
    monkeypatch.delenv("GOOGLE_GENAI_API_VERSION", raising=False)
    return make_client(fake)


def raw(url: str, method: str = "POST", **kwargs: Any) -> tuple[int, CIMultiDict[str], bytes, list[bytes]]:
    """Status, headers, body and the body as it arrived, piece by piece."""

    async def go() -> tuple[int, CIMultiDict[str], bytes, list[bytes]]:
        async with (
            aiohttp.ClientSession(auto_decompress=False) as s,
            s.request(method, url, **kwargs) as resp,
        ):
            pieces = [chunk async for chunk in resp.content.iter_any()]
            return resp.status, CIMultiDict(resp.headers), b"".join(pieces), pieces

    return asyncio.run(go())


def prompt_tokens(fake: FakeGoogle) -> int:
    return len(fake.requests[-1].body) // 4


# Builders


def test_usage_metadata_fields() -> None:
    plain = usage_metadata(10, 5)
    assert plain["totalTokenCount"] == 15
    assert "thoughtsTokenCount" not in plain and "cachedContentTokenCount" not in plain
    full = usage_metadata(10, 5, thoughts_tokens=3, cached_tokens=5)
    assert (full["thoughtsTokenCount"], full["cachedContentTokenCount"], full["totalTokenCount"]) == (3, 5, 18)


def test_sse_framing_is_crlf_and_pure() -> None:
    usage = usage_metadata(4, 5, thoughts_tokens=3)
    events = stream_generate_content_events(MODEL, ["a", "é"], usage)
    assert events == stream_generate_content_events(MODEL, ["a", "é"], usage)
    assert all(e.startswith(b"data: {") and e.endswith(b"}\r\n\r\n") and e.count(b"\r\n") == 2 for e in events)
    first, last = (json.loads(e[6:]) for e in events)
    assert "finishReason" not in first["candidates"][0] and last["candidates"][0]["finishReason"] == "STOP"
    assert first["usageMetadata"]["candidatesTokenCount"] == 2 and first["usageMetadata"]["thoughtsTokenCount"] == 3
    assert last["usageMetadata"] == usage
    assert "é".encode() in events[1]
    lf = sse_events([{"a": 1}], crlf=False)
    assert lf == [b'data: {"a":1}\n\n']
    pretty = sse_events([{"a": 1}], indent=2)
    assert pretty == [b'data: {\r\ndata:   "a": 1\r\ndata: }\r\n\r\n']


def test_json_array_pieces() -> None:
    pieces = stream_generate_content_array(MODEL, ["a", "b", "c"], usage_metadata(4, 3))
    assert pieces[0].startswith(b"[{") and pieces[1].startswith(b",\r\n{") and pieces[-1] == b"]"
    assert len(pieces) == 4 and len(json.loads(b"".join(pieces))) == 3
    assert json_array_chunks([]) == [b"[]"]


# The SDK against the default behaviour


@pytest.mark.parametrize(("api_version", "prefix"), [(None, "/v1"), ("v1beta", "/v1beta")])
def test_sdk_generate_content(fake: FakeGoogle, api_version: str | None, prefix: str) -> None:
    client = make_client(fake, api_version)
    resp = client.models.generate_content(model=MODEL, contents="hi")
    rec = fake.requests[-1]
    assert (rec.method, rec.path, rec.query_string) == ("POST", f"{prefix}/models/{MODEL}:generateContent", "")
    assert rec.header("x-goog-api-key") == "AIza-test" and rec.header("authorization") is None
    assert rec.json()["contents"] == [{"parts": [{"text": "hi"}], "role": "user"}]
    assert resp.text == TEXT and resp.model_version == MODEL
    usage = resp.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (prompt_tokens(fake), 5)
    assert usage.thoughts_token_count is None and usage.cached_content_token_count is None
    assert usage.total_token_count == prompt_tokens(fake) + 5


def test_sdk_thinking_and_cached_content(fake: FakeGoogle, client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(thinking_budget=128), cached_content="cachedContents/abc123"
    )
    usage = client.models.generate_content(model=MODEL, contents="hi", config=config).usage_metadata
    sent = fake.requests[-1].json()
    assert "thinkingConfig" in sent["generationConfig"] and sent["cachedContent"] == "cachedContents/abc123"
    assert usage is not None and usage.prompt_token_count == prompt_tokens(fake)
    assert (usage.thoughts_token_count, usage.cached_content_token_count) == (3, prompt_tokens(fake) // 2)
    assert usage.total_token_count == prompt_tokens(fake) + 5 + 3


@pytest.mark.parametrize(("api_version", "prefix"), [(None, "/v1"), ("v1beta", "/v1beta")])
def test_sdk_generate_content_stream(fake: FakeGoogle, api_version: str | None, prefix: str) -> None:
    client = make_client(fake, api_version)
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    rec = fake.requests[-1]
    assert (rec.path, rec.query_string) == (f"{prefix}/models/{MODEL}:streamGenerateContent", "alt=sse")
    assert rec.header("x-goog-api-key") == "AIza-test"
    assert "".join(c.text or "" for c in chunks) == TEXT
    counts = [c.usage_metadata.candidates_token_count for c in chunks if c.usage_metadata]
    assert counts == [1, 2, 3, 4, 5]  # running totals: the last chunk's values are the final ones
    assert all(c.usage_metadata and c.usage_metadata.prompt_token_count == prompt_tokens(fake) for c in chunks)
    assert [c.candidates[0].finish_reason for c in chunks if c.candidates][-1] == types.FinishReason.STOP


@pytest.mark.parametrize("scenario", ["pretty", "lf", "gzip,slow"])
def test_sdk_stream_framing_variants(client: genai.Client, scenario: str) -> None:
    config = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"x-fake-scenario": scenario}))
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi", config=config))
    assert "".join(c.text or "" for c in chunks) == TEXT


def test_sdk_count_tokens_and_models(client: genai.Client) -> None:
    assert client.models.count_tokens(model=MODEL, contents="hi").total_tokens
    assert next(m.name for m in client.models.list()) == f"models/{MODEL}"
    assert client.models.get(model="gemini-2.5-pro").display_name == "Gemini 2.5 Pro"
    with pytest.raises(errors.ClientError) as info:
        client.models.get(model="gemini-0")
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")


def test_sdk_rate_limit(fake: FakeGoogle, client: genai.Client) -> None:
    fake.enqueue(google_error_reply(429, "RESOURCE_EXHAUSTED", "quota", retry_delay=20))
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents="hi")
    err = info.value
    assert (err.code, err.status, err.message) == (429, "RESOURCE_EXHAUSTED", "quota")
    assert err.details["error"]["details"][0]["retryDelay"] == "20s"
    fake.enqueue(google_error_reply(503, "UNAVAILABLE", "busy", array=True))
    with pytest.raises(errors.ServerError) as server:
        client.models.generate_content(model=MODEL, contents="hi")
    assert (server.value.code, server.value.status) == (503, "UNAVAILABLE")


def test_sdk_error_scenario_and_midstream_error(client: genai.Client) -> None:
    config = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"x-fake-scenario": "error-429"}))
    with pytest.raises(errors.ClientError, match="RESOURCE_EXHAUSTED"):
        client.models.generate_content(model=MODEL, contents="hi", config=config)
    config = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"x-fake-scenario": "midstream-error"}))
    seen: list[str] = []
    with pytest.raises(errors.ServerError) as info:
        seen.extend(
            c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents="hi", config=config)
        )
    assert seen == ["Hello", " from"] and info.value.status == "INTERNAL"


# Raw framing


def test_alt_sse_is_crlf_separated_and_streamed(fake: FakeGoogle) -> None:
    status, headers, body, _ = raw(fake.url + STREAM_PATH + "?alt=sse", json={"contents": []})
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = body.split(b"\r\n\r\n")
    assert events[-1] == b"" and len(events) == 6 and b"\n\n" not in body
    assert all(e.startswith(b"data: {") for e in events[:-1]) and b"[DONE]" not in body
    assert len(fake.chunk_times()) == 5  # one write per event


def test_json_array_stream_without_alt(fake: FakeGoogle) -> None:
    status, headers, body, _ = raw(fake.url + STREAM_PATH, json={"contents": []})
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert body.startswith(b"[{") and body.count(b",\r\n{") == 4 and body.endswith(b"}]")
    objects = json.loads(body)
    assert "".join(o["candidates"][0]["content"]["parts"][0]["text"] for o in objects) == TEXT
    assert objects[-1]["usageMetadata"]["candidatesTokenCount"] == 5
    assert len(fake.chunk_times()) == 6  # five objects, then `]`, each its own write


def test_key_query_credential_recorded_unchanged(fake: FakeGoogle) -> None:
    query = "key=AIza%2Bsecret&alt=sse"
    status, _, _, _ = raw(fake.url + STREAM_PATH + "?" + query, json={"contents": []})
    rec = fake.requests[-1]
    assert status == 200 and rec.query_string == query and rec.header("x-goog-api-key") is None


def test_errors_in_array_form(fake: FakeGoogle) -> None:
    status, _, body, _ = raw(fake.url + STREAM_PATH, json={}, headers={"x-fake-scenario": "error-429"})
    assert status == 429
    error = json.loads(body)[0]["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    _, _, plain, _ = raw(fake.url + STREAM_PATH + "?alt=sse", json={}, headers={"x-fake-scenario": "error-500"})
    assert json.loads(plain)["error"]["status"] == "INTERNAL"
    _, _, forced, _ = raw(
        fake.url + STREAM_PATH + "?alt=sse", json={}, headers={"x-fake-scenario": "error-500,error-array"}
    )
    assert json.loads(forced)[0]["error"]["code"] == 500
    status, _, bad, _ = raw(fake.url + f"/v1/models/{MODEL}:generateContent", data=b"{no")
    assert status == 400 and json.loads(bad)["error"]["status"] == "INVALID_ARGUMENT"
    status, _, missing, _ = raw(fake.url + "/v1/nothing")
    assert status == 404 and json.loads(missing)["error"]["status"] == "NOT_FOUND"


def test_queued_reply_wins(fake: FakeGoogle, client: genai.Client) -> None:
    fake.enqueue(Reply(chunks=[b'data: {"candidates":[{"content":{"parts":[{"text":"X"}]}}]}\r\n\r\n']))
    assert [c.text for c in client.models.generate_content_stream(model=MODEL, contents="hi")] == ["X"]


# Gemini's OpenAI-compatible layer


@pytest.fixture
def compat(fake: FakeGoogle) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1beta/openai/", api_key="AIza-test", max_retries=0, timeout=5)


def test_openai_layer(fake: FakeGoogle, compat: openai.OpenAI) -> None:
    resp = compat.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    rec = fake.requests[-1]
    assert rec.path == "/v1beta/openai/chat/completions" and rec.header("authorization") == "Bearer AIza-test"
    assert resp.choices[0].message.content == TEXT and resp.usage is not None
    assert resp.usage.prompt_tokens == prompt_tokens(fake)
    stream = compat.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-scenario": "usage-in-final-chunk"},
    )
    last = list(stream)[-1]
    assert last.choices[0].finish_reason == "stop" and last.usage is not None
    assert next(m.id for m in compat.models.list()) == f"models/{MODEL}"  # Google's layer names them so
    assert compat.embeddings.create(model="gemini-embedding-001", input="x").data


def test_openai_layer_errors_are_arrays(compat: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        compat.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers={"x-fake-scenario": "error-429"}
        )
    body = info.value.body
    assert isinstance(body, list) and body[0]["error"]["status"] == "RESOURCE_EXHAUSTED"
