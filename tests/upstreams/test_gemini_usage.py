"""Gemini native usage from the bytes Google sends: CRLF SSE, a streamed JSON array, bodies."""

from __future__ import annotations

import json
import random

import pytest
from meter_support import JSON, run, split_randomly

from buzz.billing.usage import Usage
from buzz.upstreams.google import GeminiUsage

# The first chunk is from a recorded gemini-1.5-pro-002 stream, the second is modelled on it.
CHUNK_1 = (
    b'{"candidates": [{"content": {"parts": [{"text": "Certainly"}],"role": "model"}}],'
    b'"usageMetadata": {"promptTokenCount": 399,"totalTokenCount": 399},"modelVersion": "gemini-1.5-pro-002"}'
)
CHUNK_2 = (
    b'{"candidates": [{"content": {"parts": [{"text": "! Here you go."}],"role": "model"},"finishReason": "STOP"}],'
    b'"usageMetadata": {"promptTokenCount": 399,"candidatesTokenCount": 12,"totalTokenCount": 411},'
    b'"modelVersion": "gemini-1.5-pro-002"}'
)
SSE_CRLF = b"data: " + CHUNK_1 + b"\r\n\r\n" + b"data: " + CHUNK_2 + b"\r\n\r\n"
# Without ?alt=sse: one JSON array, elements separated as Google's server lays them out.
JSON_ARRAY = b"[" + CHUNK_1 + b"\r\n,\r\n" + CHUNK_2 + b"\r\n]"
EXPECTED = Usage(input_tokens=399, output_tokens=12)

REQUEST = (
    b'{"contents":[{"role":"user","parts":[{"text":"Explain how AI works"}]}],'
    b'"systemInstruction":{"parts":[{"text":"You are terse."}]},'
    b'"generationConfig":{"maxOutputTokens":1024,"temperature":0.7}}'
)
# No offline Gemini tokenizer: "Explain how AI works\nYou are terse." is 35 characters -> ceil(35 / 4)
# = 9 tokens, plus 1 role-framed message x 3 and 3 to prime the reply.
REQUEST_TOKENS = 9 + 3 + 3


def gemini() -> GeminiUsage:
    return GeminiUsage(REQUEST, "gemini-1.5-pro")


def test_crlf_sse_under_any_chunking() -> None:
    rng = random.Random(41)
    for _ in range(30):
        result = run(gemini(), split_randomly(SSE_CRLF, rng))
        assert result.usage == EXPECTED
        assert (result.source, result.model, result.error_type) == ("reported", "gemini-1.5-pro-002", None)


def test_json_array_stream_under_any_chunking() -> None:
    rng = random.Random(42)
    for _ in range(30):
        result = run(gemini(), split_randomly(JSON_ARRAY, rng), JSON)
        assert result.usage == EXPECTED
        assert (result.source, result.model) == ("reported", "gemini-1.5-pro-002")


def test_generate_content_body() -> None:
    body = (
        b'{"candidates":[{"content":{"role":"model","parts":[{"text":"I am a large language model, trained by '
        b'Google.\\n"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":4,'
        b'"candidatesTokenCount":11,"totalTokenCount":15,"promptTokensDetails":[{"modality":"TEXT","tokenCount":4}]},'
        b'"modelVersion":"gemini-2.5-flash","responseId":"mAitaKmPHP6b"}'
    )
    result = run(gemini(), body, JSON)
    assert result.usage == Usage(input_tokens=4, output_tokens=11)
    assert (result.source, result.model) == ("reported", "gemini-2.5-flash")


def test_cached_content_thoughts_and_tool_use() -> None:
    usage = {
        "promptTokenCount": 10_000,
        "cachedContentTokenCount": 6_000,
        "toolUsePromptTokenCount": 500,
        "candidatesTokenCount": 300,
        "thoughtsTokenCount": 700,
        "totalTokenCount": 11_500,
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 6_000}],
        "trafficType": "ON_DEMAND",
    }
    body = json.dumps({"candidates": [{"finishReason": "STOP"}], "usageMetadata": usage}).encode()
    result = run(gemini(), body, JSON)
    # input = 10000 prompt - 6000 cached + 500 tool use; output = 300 candidates + 700 thoughts
    assert result.usage == Usage(input_tokens=10_000 - 6_000 + 500, output_tokens=300 + 700, cache_read_tokens=6_000)


def test_stream_cut_after_a_chunk_keeps_the_prompt_count() -> None:
    result = run(gemini(), b"data: " + CHUNK_1 + b'\r\n\r\ndata: {"candi', complete=False)
    # Output so far: "Certainly", 9 characters in one delta -> ceil(9 / 4) = 3 beats the 0 reported.
    assert result.usage == Usage(input_tokens=399, output_tokens=3)
    assert result.source == "estimated"


def test_stream_ending_without_finish_reason_is_an_estimate() -> None:
    result = run(gemini(), b"data: " + CHUNK_1 + b"\r\n\r\n")
    assert (result.usage, result.source) == (Usage(input_tokens=399, output_tokens=3), "estimated")


def test_stream_cut_before_any_chunk_estimates_from_the_request() -> None:
    result = run(gemini(), b'data: {"candidates": [{"con', complete=False)
    assert (result.usage, result.source) == (Usage(input_tokens=REQUEST_TOKENS), "estimated")
    # The JSON-array form: the meter hands rules no body when the answer is cut.
    cut = run(gemini(), JSON_ARRAY[:100], JSON, complete=False)
    assert (cut.usage, cut.source) == (Usage(input_tokens=REQUEST_TOKENS), "estimated")


def test_inline_media_is_not_counted_as_text() -> None:
    image = "iVBORw0KGgo" * 10_000  # 110k characters of base64
    request = json.dumps(
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"text": "Explain how AI works"},
                        {"inlineData": {"mimeType": "image/png", "data": image}},
                    ],
                }
            ],
            "systemInstruction": {"parts": [{"text": "You are terse."}]},
        }
    ).encode()
    result = run(GeminiUsage(request, "gemini-2.5-pro"), b"", complete=False)
    assert result.usage == Usage(input_tokens=REQUEST_TOKENS)


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        (
            b'{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).",'
            b'"status":"RESOURCE_EXHAUSTED"}}',
            "RESOURCE_EXHAUSTED",
        ),
        (b'[{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}]', "RESOURCE_EXHAUSTED"),
        (b'{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT","details":[]}}', "INVALID_ARGUMENT"),
        (b'{"error":{"code":500,"message":"Internal error"}}', None),
        (b'{"error":{"code":503,"status":"Service unavailable, try later"}}', None),
        (b"<html><body>502</body></html>", None),
    ],
)
def test_error_bodies(body: bytes, error_type: str | None) -> None:
    result = run(gemini(), body, JSON, status=429)
    assert (result.usage, result.source, result.error_type) == (None, "none", error_type)


def test_error_in_a_stream() -> None:
    error = b'data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}\r\n\r\n'
    result = run(gemini(), error)
    assert (result.usage, result.source, result.error_type) == (None, "none", "UNAVAILABLE")


@pytest.mark.parametrize(
    "garbage",
    [
        b"data: nope\r\n\r\n",
        b'data: {"usageMetadata":{"promptTokenCount":"ten"}}\r\n\r\n',
        b'data: {"candidates":[{"content":{"parts":[{"text":5}]}}]}\r\n\r\n',
        b"data: [[]]\r\n\r\n",
    ],
)
def test_malformed_stream_never_raises(garbage: bytes) -> None:
    result = run(gemini(), garbage)
    assert (result.usage, result.source) == (None, "none")


def test_malformed_body_never_raises() -> None:
    for body in (b"[", b"[{}, 7]", b'{"usageMetadata": []}', b"\xff\xfe"):
        assert run(gemini(), body, JSON).usage is None
