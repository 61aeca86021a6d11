"""One key across Claude, GPT, Gemini and Grok: the OpenAI-compatible surface and native Gemini.

Real SDKs (openai, google-genai) drive one buzz process whose four upstreams are fake vendors;
bytes are compared both ways, and every request's row is checked to the nano-dollar.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from fakes.fake_anthropic import FakeAnthropic
from fakes.fake_google import FakeGoogle
from fakes.fake_openai import FakeOpenAI, FakeXAI
from fakes.google_replies import google_error_reply
from fakes.google_sse import generate_content_json, stream_generate_content_events, usage_metadata
from fakes.openai_replies import openai_error_reply
from fakes.openai_sse import chat_completion_json, chat_stream_chunks, chat_usage
from fakes.replies import Reply
from support import BuzzProcess, raw_post

KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-vendor-test",
    "OPENAI_API_KEY": "sk-openai-vendor-test",
    "GEMINI_API_KEY": "gemini-vendor-test",
    "XAI_API_KEY": "xai-vendor-test",
}


class Vendors:
    def __init__(self, anthropic: FakeAnthropic, openai: FakeOpenAI, google: FakeGoogle, xai: FakeXAI) -> None:
        self.anthropic, self.openai, self.google, self.xai = anthropic, openai, google, xai

    def clear(self) -> None:
        for fake in (self.anthropic, self.openai, self.google, self.xai):
            fake.clear()
            fake.drain_replies()


@pytest.fixture(scope="module")
def vendors(fake_session: FakeAnthropic) -> Iterator[Vendors]:
    with FakeOpenAI() as openai_fake, FakeGoogle() as google_fake, FakeXAI() as xai_fake:
        yield Vendors(fake_session, openai_fake, google_fake, xai_fake)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, vendors: Vendors) -> Iterator[BuzzProcess]:
    env = {
        **KEYS,
        "BUZZ_OPENAI_BASE_URL": vendors.openai.url + "/v1",
        "BUZZ_GOOGLE_BASE_URL": vendors.google.url,
        "BUZZ_XAI_BASE_URL": vendors.xai.url + "/v1",
    }
    process = BuzzProcess(tmp_path_factory.mktemp("vendors") / "data", vendors.anthropic.url, env=env)
    process.env["ANTHROPIC_API_KEY"] = KEYS["ANTHROPIC_API_KEY"]
    process.start()
    yield process
    process.stop()


@pytest.fixture
def fakes(vendors: Vendors) -> Iterator[Vendors]:
    vendors.clear()
    yield vendors
    vendors.clear()


@pytest.fixture(scope="module")
def buzz_key(gateway: BuzzProcess) -> str:
    return gateway.create_key(project="one-key")


def _openai(gateway: BuzzProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)


def _gemini(gateway: BuzzProcess, key: str, version: str | None = None) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=gateway.url, api_version=version))


def _row(gateway: BuzzProcess, request_id: str | None = None, **match: object) -> dict[str, object]:
    def wanted(row: dict[str, object]) -> bool:
        return (request_id is None or row["upstream_request_id"] == request_id) and all(
            row[k] == v for k, v in match.items()
        )

    rows = gateway.ledger(count=1, where=wanted)
    assert rows, f"no ledger row for {request_id} {match}"
    return rows[-1]


# --- the OpenAI-compatible surface, per vendor ---------------------------------------------


@pytest.mark.parametrize(
    ("model", "vendor", "path", "upstream_key"),
    [
        ("gpt-5.5", "openai", "/v1/chat/completions", KEYS["OPENAI_API_KEY"]),
        ("claude-sonnet-4-6", "anthropic", "/v1/chat/completions", KEYS["ANTHROPIC_API_KEY"]),
        ("gemini-2.5-pro", "google", "/v1beta/openai/chat/completions", KEYS["GEMINI_API_KEY"]),
        ("grok-4.3", "xai", "/v1/chat/completions", KEYS["XAI_API_KEY"]),
    ],
)
def test_chat_reaches_each_vendor_byte_for_byte(
    gateway: BuzzProcess, fakes: Vendors, buzz_key: str, model: str, vendor: str, path: str, upstream_key: str
) -> None:
    body = (
        b'{"model":"' + model.encode() + b'",  "messages":[{"role":"user","content":"caf\\u00e9 \xe2\x98\x95"}],'
        b'"temperature":0.2,"user":"u-9"}'
    )
    status, headers, data = raw_post(
        gateway.url,
        "/v1/chat/completions?trace=1",
        body,
        {"authorization": f"Bearer {buzz_key}", "content-type": "application/json", "x-custom": "kept"},
    )
    assert status == 200
    fake = getattr(fakes, vendor)
    [seen] = fake.requests
    assert (seen.path, seen.query_string, seen.body) == (path, "trace=1", body)
    assert seen.header("authorization") == f"Bearer {upstream_key}"
    assert seen.header("x-custom") == "kept"
    assert buzz_key not in repr(seen.raw_headers)
    document = json.loads(data)
    assert document["model"] == model and document["object"] == "chat.completion"
    row = _row(gateway, document_request_id(headers), model=model)
    assert (row["surface"], row["provider"], row["status"], row["user_id"]) == ("openai", vendor, 200, "u-9")
    prompt = max(1, len(body) // 4)
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (prompt, 5, "reported")


def document_request_id(headers: list[tuple[str, str]]) -> str | None:
    received = {name.lower(): value for name, value in headers}
    return received.get("x-request-id") or received.get("request-id")


def test_openai_sdk_chat_with_cache_and_cost(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    client = _openai(gateway, buzz_key)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-5.5", messages=[{"role": "user", "content": "x" * 400}], prompt_cache_key="conv-1"
    )
    completion = raw.parse()
    [seen] = fakes.openai.requests
    prompt = max(1, len(seen.body) // 4)
    cached = prompt // 2
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == cached
    row = _row(gateway, raw.headers["x-request-id"])
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (prompt - cached, cached, 5)
    # gpt-5.5: $5 input, $0.50 cached input, $30 output per million tokens.
    assert row["cost_nanos"] == (prompt - cached) * 5000 + cached * 500 + 5 * 30000


def test_stream_with_include_usage_is_reported(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    client = _openai(gateway, buzz_key)
    stream = client.chat.completions.create(
        model="gpt-5.5",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    [seen] = fakes.openai.requests
    assert json.loads(seen.body)["stream_options"] == {"include_usage": True}
    row = _row(gateway, model="gpt-5.5", usage_source="reported", input_tokens=max(1, len(seen.body) // 4))
    assert row["output_tokens"] == 5


def test_stream_without_include_usage_is_estimated_and_untouched(
    gateway: BuzzProcess, fakes: Vendors, buzz_key: str
) -> None:
    body = b'{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"' + b"word " * 200 + b'"}]}'
    status, headers, data = raw_post(gateway.url, "/v1/chat/completions", body, {"authorization": f"Bearer {buzz_key}"})
    assert status == 200
    [seen] = fakes.openai.requests
    assert seen.body == body  # buzz added nothing
    assert b'"usage":{' not in data and data.rstrip().endswith(b"data: [DONE]")
    row = _row(gateway, document_request_id(headers))
    assert row["usage_source"] == "estimated"
    assert 150 <= row["input_tokens"] <= 400  # ~200 words of prompt
    assert row["output_tokens"] >= 1
    assert row["cost_nanos"] > 0


def test_responses_api_and_embeddings(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    client = _openai(gateway, buzz_key)
    response = client.responses.create(model="gpt-5.5", input="Tell me a story")
    assert response.usage is not None
    [seen] = fakes.openai.requests
    assert seen.path == "/v1/responses"
    row = _row(gateway, model="gpt-5.5", input_tokens=response.usage.input_tokens)
    assert row["output_tokens"] == response.usage.output_tokens

    with client.responses.stream(model="gpt-5.5", input="Stream a story") as stream:
        final = stream.get_final_response()
    assert final.usage is not None
    _row(gateway, model="gpt-5.5", usage_source="reported", input_tokens=final.usage.input_tokens)

    embedding = client.embeddings.create(model="text-embedding-3-small", input="embed me")
    assert len(embedding.data[0].embedding) > 0
    assert fakes.openai.requests[-1].path == "/v1/embeddings"
    row = _row(gateway, model="text-embedding-3-small")
    assert (row["input_tokens"], row["output_tokens"]) == (embedding.usage.prompt_tokens, 0)
    # text-embedding-3-small: $0.02 per million tokens.
    assert row["cost_nanos"] == embedding.usage.prompt_tokens * 20


def test_grok_reasoning_tokens_are_billed_as_output(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    client = _openai(gateway, buzz_key)
    raw = client.chat.completions.with_raw_response.create(
        model="grok-4-fast-reasoning", messages=[{"role": "user", "content": "think"}]
    )
    completion = raw.parse()
    assert completion.usage is not None
    details = completion.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 2 and completion.usage.completion_tokens == 5
    [seen] = fakes.xai.requests
    prompt = max(1, len(seen.body) // 4)
    row = _row(gateway, raw.headers["x-request-id"])
    assert (row["input_tokens"], row["output_tokens"]) == (prompt, 5 + 2)  # xAI counts reasoning apart
    # grok-4-fast-reasoning: $0.20 input, $0.50 output per million tokens.
    assert row["cost_nanos"] == prompt * 200 + 7 * 500


def test_a_model_without_a_price_is_kept_and_flagged(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    raw = _openai(gateway, buzz_key).chat.completions.with_raw_response.create(
        model="gpt-5.5-nightly", messages=[{"role": "user", "content": "new model"}]
    )
    row = _row(gateway, raw.headers["x-request-id"])
    assert (row["provider"], row["usage_source"], row["output_tokens"]) == ("openai", "reported", 5)
    assert row["cost_nanos"] is None and row["list_cost_nanos"] is None  # unknown, never a silent zero
    usage = gateway.cli("usage", "--by", "model")
    line = next(line for line in usage.stdout.splitlines() if "gpt-5.5-nightly" in line)
    assert "unpriced" in line


def test_models_list_in_openai_shape_has_every_vendor(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    models = [model.id for model in _openai(gateway, buzz_key).models.list()]
    for expected in ("gpt-5.5", "claude-opus-4-8", "gemini-2.5-pro", "grok-4", "text-embedding-3-small"):
        assert expected in models  # as each fake vendor lists them
    one = _openai(gateway, buzz_key).models.retrieve("gemini-2.5-pro")
    assert (one.id, one.owned_by) == ("gemini-2.5-pro", "google")


# --- native Gemini -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "v1beta"])
def test_genai_sdk_generate_and_stream(
    gateway: BuzzProcess, fakes: Vendors, buzz_key: str, version: str | None
) -> None:
    client = _gemini(gateway, buzz_key, version)
    result = client.models.generate_content(
        model="gemini-2.5-pro",
        contents="Explain how AI works",
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=1024)),
    )
    assert result.usage_metadata is not None
    [seen] = fakes.google.requests
    assert seen.path == f"/{version or 'v1'}/models/gemini-2.5-pro:generateContent"
    assert seen.header("x-goog-api-key") == KEYS["GEMINI_API_KEY"]
    assert buzz_key not in repr(seen.raw_headers) + seen.query_string
    prompt = max(1, len(seen.body) // 4)
    row = _row(gateway, model="gemini-2.5-pro", surface="gemini", input_tokens=prompt)
    assert (row["output_tokens"], row["usage_source"]) == (5 + 3, "reported")  # thoughts are output
    # gemini-2.5-pro under 200k tokens: $1.25 input, $10 output per million.
    assert row["cost_nanos"] == prompt * 1250 + 8 * 10000

    texts = [chunk.text for chunk in client.models.generate_content_stream(model="gemini-2.5-pro", contents="Hi")]
    assert "".join(t or "" for t in texts)
    streamed = fakes.google.requests[-1]
    assert streamed.path.endswith(":streamGenerateContent") and "alt=sse" in streamed.query_string
    _row(gateway, model="gemini-2.5-pro", usage_source="reported", input_tokens=max(1, len(streamed.body) // 4))


def test_key_in_the_query_is_replaced_in_the_query(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    body = b'{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"cachedContent":"cachedContents/abc"}'
    status, _, data = raw_post(
        gateway.url, f"/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key={buzz_key}", body, {}
    )
    assert status == 200 and data.count(b"\r\n\r\n") >= 2  # Gemini's CRLF framing, relayed as is
    [seen] = fakes.google.requests
    assert seen.query_string == f"alt=sse&key={KEYS['GEMINI_API_KEY']}"
    assert seen.header("x-goog-api-key") is None
    prompt = max(1, len(body) // 4)
    row = _row(gateway, model="gemini-2.5-pro", surface="gemini", cache_read_tokens=prompt // 2)
    assert row["input_tokens"] == prompt - prompt // 2
    # The streamed JSON array form (no alt=sse) is metered too.
    status, _, data = raw_post(
        gateway.url,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        b'{"contents":[{"parts":[{"text":"array"}]}]}',
        {"x-goog-api-key": buzz_key},
    )
    assert status == 200 and data.startswith(b"[")
    _row(gateway, model="gemini-2.5-flash", usage_source="reported", output_tokens=5)


# --- errors in each surface's envelope -----------------------------------------------------


def test_gateway_errors_in_openai_envelope(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        _openai(gateway, "buzz-bad").chat.completions.create(model="gpt-5.5", messages=[])
    assert raised.value.type == "gateway_authentication_error"
    assert raised.value.response.headers["x-buzz-error-source"] == "gateway"
    with pytest.raises(openai.NotFoundError) as missing:
        _openai(gateway, buzz_key).chat.completions.create(model="mistral-large", messages=[])
    assert missing.value.type == "gateway_not_found_error"
    assert "/v1/models" in missing.value.message
    status, _, data = raw_post(gateway.url, "/v1/chat/completions", b"{oops", {"authorization": f"Bearer {buzz_key}"})
    assert status == 400
    assert json.loads(data)["error"]["type"] == "gateway_invalid_request_error"
    assert fakes.openai.requests == []


def test_gateway_errors_in_gemini_envelope(gateway: BuzzProcess, fakes: Vendors) -> None:
    client = _gemini(gateway, "buzz-bad")  # kept in a variable: the SDK closes a collected client
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_content(model="gemini-2.5-pro", contents="x")
    assert raised.value.code == 401
    assert raised.value.status == "UNAUTHENTICATED"
    details = raised.value.details["error"]["details"][0]
    assert details["reason"] == "gateway_authentication_error"
    assert fakes.google.requests == []


def test_upstream_errors_pass_through_untouched(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    reply = openai_error_reply(429, "requests", "Rate limit reached", code="rate_limit_exceeded")
    fakes.openai.enqueue(reply)
    with pytest.raises(openai.RateLimitError) as raised:
        _openai(gateway, buzz_key).chat.completions.create(model="gpt-5.5", messages=[])
    assert raised.value.response.content == reply.body
    assert raised.value.response.headers["retry-after"] == dict(reply.headers)["retry-after"]
    assert len(fakes.openai.requests) == 1

    array = google_error_reply(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", array=True)
    fakes.google.enqueue(array)
    status, _, data = raw_post(
        gateway.url,
        "/v1beta/models/gemini-2.5-pro:generateContent",
        b'{"contents":[]}',
        {"x-goog-api-key": buzz_key},
    )
    assert (status, data) == (429, array.body)
    row = _row(gateway, model="gemini-2.5-pro", status=429)
    assert row["error_type"] == "RESOURCE_EXHAUSTED"


def test_a_vendor_without_credential_is_not_routable(tmp_path: Path, vendors: Vendors) -> None:
    process = BuzzProcess(
        tmp_path / "data",
        vendors.anthropic.url,
        env={"OPENAI_API_KEY": "sk-only-openai", "BUZZ_OPENAI_BASE_URL": vendors.openai.url + "/v1"},
    )
    del process.env["ANTHROPIC_API_KEY"]
    with process:
        key = process.create_key()
        client = _openai(process, key)
        listed = {model.id for model in client.models.list()}
        assert "gpt-5.5" in listed and not any(m.startswith(("claude", "gemini", "grok")) for m in listed)
        with pytest.raises(openai.NotFoundError) as unconfigured:
            client.chat.completions.create(model="claude-opus-4-8", messages=[])
        assert unconfigured.value.message.endswith("vendor Anthropic is not configured on this gateway")
        assert client.chat.completions.create(model="gpt-5.5", messages=[]).model == "gpt-5.5"


def test_opt_in_include_usage_is_the_one_change(tmp_path: Path, vendors: Vendors) -> None:
    vendors.clear()
    process = BuzzProcess(
        tmp_path / "data",
        vendors.anthropic.url,
        env={
            "OPENAI_API_KEY": "sk-o",
            "BUZZ_OPENAI_BASE_URL": vendors.openai.url + "/v1",
            "BUZZ_ADD_INCLUDE_USAGE": "true",
        },
    ).start()
    try:
        key = process.create_key()
        body = b'{"model":"gpt-5.5","stream":true,"messages":[{"role":"user","content":"hi"}]}'
        status, _, data = raw_post(process.url, "/v1/chat/completions", body, {"authorization": f"Bearer {key}"})
        assert status == 200
        [seen] = vendors.openai.requests
        sent = json.loads(seen.body)
        assert sent["stream_options"] == {"include_usage": True}
        assert {k: v for k, v in sent.items() if k != "stream_options"} == json.loads(body)
        assert b'"usage":{' in data  # the client gets the usage chunk: nothing is removed
        [row] = process.ledger(count=1)
        assert row["usage_source"] == "reported"
        assert row["input_tokens"] == max(1, len(seen.body) // 4)
    finally:
        process.stop()
        vendors.clear()


def test_no_body_content_is_kept_on_any_surface(tmp_path: Path, vendors: Vendors) -> None:
    canary = "CANARY-multivendor-51c0"
    env = {
        **KEYS,
        "BUZZ_OPENAI_BASE_URL": vendors.openai.url + "/v1",
        "BUZZ_GOOGLE_BASE_URL": vendors.google.url,
        "BUZZ_XAI_BASE_URL": vendors.xai.url + "/v1",
        "BUZZ_LOG_LEVEL": "debug",
    }
    process = BuzzProcess(tmp_path / "data", vendors.anthropic.url, env=env).start()
    vendors.clear()
    try:
        key = process.create_key()
        client = _openai(process, key)
        for model in ("gpt-5.5", "claude-sonnet-4-6", "gemini-2.5-pro", "grok-4.3"):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": canary}])
            list(
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": canary}], stream=True)
            )
        client.responses.create(model="gpt-5.5", input=canary)
        client.embeddings.create(model="text-embedding-3-small", input=canary)
        vendors.openai.enqueue(openai_error_reply(400, "invalid_request_error", f"bad {canary}"))
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": canary}])
        gemini = _gemini(process, key)
        gemini.models.generate_content(model="gemini-2.5-pro", contents=canary)
        list(gemini.models.generate_content_stream(model="gemini-2.5-pro", contents=canary))
        vendors.google.enqueue(google_error_reply(400, "INVALID_ARGUMENT", f"bad {canary}"))
        with pytest.raises(genai_errors.ClientError):
            gemini.models.generate_content(model="gemini-2.5-pro", contents=canary)
        for path in ("/v1/chat/completions", "/v1beta/models/gemini-2.5-pro:generateContent"):
            raw_post(process.url, path, f"{{{canary}".encode(), {"authorization": f"Bearer {key}"})
        raw_post(
            process.url, "/v1/chat/completions", f'{{"model":"{canary}"}}'.encode(), {"authorization": f"Bearer {key}"}
        )
        assert len(process.ledger(count=17)) == 17
    finally:
        process.stop()
        vendors.clear()
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), f"canary found in {path}"
    assert canary.encode() not in process.output()


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "google", "xai"])
def test_chat_answers_come_back_byte_for_byte(gateway: BuzzProcess, fakes: Vendors, buzz_key: str, vendor: str) -> None:
    model = {"openai": "gpt-5.5", "anthropic": "claude-opus-4-8", "google": "gemini-2.5-flash", "xai": "grok-4.7"}[
        vendor
    ]
    usage = chat_usage(40, 6, cached_tokens=10)
    plain = chat_completion_json(model, "exact bytes", usage)
    chunks = chat_stream_chunks(model, ["one", " two"], usage, obfuscation=True)
    fake = getattr(fakes, vendor)
    id_header = "request-id" if vendor == "anthropic" else "x-request-id"  # Anthropic's name, on every API
    headers = [(id_header, f"req_{vendor}_plain"), ("openai-processing-ms", "12"), ("x-vendor-thing", "Keep Me")]
    fake.enqueue(Reply(body=plain, headers=headers), Reply(chunks=chunks, headers=[(id_header, f"req_{vendor}_s")]))
    auth = {"authorization": f"Bearer {buzz_key}"}
    status, got_headers, data = raw_post(gateway.url, "/v1/chat/completions", f'{{"model":"{model}"}}'.encode(), auth)
    assert (status, data) == (200, plain)
    received = [(name.lower(), value) for name, value in got_headers]
    for name, value in headers:
        assert (name.lower(), value) in received
    body = f'{{"model":"{model}","stream":true}}'.encode()
    status, _, data = raw_post(gateway.url, "/v1/chat/completions", body, auth)
    assert (status, data) == (200, b"".join(chunks))
    for suffix in ("plain", "s"):
        row = _row(gateway, f"req_{vendor}_{suffix}")
        assert (row["input_tokens"], row["cache_read_tokens"], row["usage_source"]) == (30, 10, "reported")


def test_gemini_answers_come_back_byte_for_byte(gateway: BuzzProcess, fakes: Vendors, buzz_key: str) -> None:
    usage = usage_metadata(120, 9, thoughts_tokens=4, cached_tokens=20)
    plain = generate_content_json("gemini-2.5-pro", "exact", usage)
    events = stream_generate_content_events("gemini-2.5-pro", ["a", "b", "c"], usage)
    fakes.google.enqueue(Reply(body=plain), Reply(chunks=events))
    auth = {"x-goog-api-key": buzz_key}
    path = "/v1beta/models/gemini-2.5-pro"
    assert raw_post(gateway.url, f"{path}:generateContent", b"{}", auth)[::2] == (200, plain)
    assert raw_post(gateway.url, f"{path}:streamGenerateContent?alt=sse", b"{}", auth)[::2] == (200, b"".join(events))
    rows = gateway.ledger(count=2, where=lambda r: r["model"] == "gemini-2.5-pro" and r["input_tokens"] == 100)
    assert [(r["cache_read_tokens"], r["output_tokens"]) for r in rows[-2:]] == [(20, 13), (20, 13)]
