"""OpenAI-style usage (chat, responses, embeddings) from the bytes vendors send (docs/vendors.md)."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Mapping

import pytest
from meter_support import JSON, run, split_randomly

from buzz.billing.usage import Usage
from buzz.upstreams.openai import ChatUsage, EmbeddingsUsage, ResponsesUsage

# --- chat completions --------------------------------------------------------------------------

# The exact bytes of a recorded gpt-4o stream with include_usage (an openai-python test fixture).
WIRE_2_4 = (
    b'data: {"id":"chatcmpl-ABfw3Oqj8RD0z6aJiiX37oTjV2HFh","object":"chat.completion.chunk","created":1727346171,'
    b'"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7568d46099","choices":[{"index":0,"delta":{"role":'
    b'"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-ABfw3Oqj8RD0z6aJiiX37oTjV2HFh","object":"chat.completion.chunk","created":1727346171,'
    b'"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7568d46099","choices":[{"index":0,"delta":{"content":'
    b'"{\\""},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-ABfw3Oqj8RD0z6aJiiX37oTjV2HFh","object":"chat.completion.chunk","created":1727346171,'
    b'"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7568d46099","choices":[{"index":0,"delta":{},'
    b'"logprobs":null,"finish_reason":"length"}]}\n\n'
    b'data: {"id":"chatcmpl-ABfw3Oqj8RD0z6aJiiX37oTjV2HFh","object":"chat.completion.chunk","created":1727346171,'
    b'"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7568d46099","choices":[],"usage":{"prompt_tokens":79,'
    b'"completion_tokens":1,"total_tokens":80,"completion_tokens_details":{"reasoning_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)
CHAT_REQUEST = (
    b'{"model":"gpt-5.5","messages":[{"role":"developer","content":"Be terse."},'
    b'{"role":"user","content":"Hello"}],"stream":true}'
)
# o200k_base: "Be terse.\nHello" is 4 tokens; 2 messages x 3 framing + 3 reply priming.
CHAT_REQUEST_TOKENS = 4 + 2 * 3 + 3


def chunk(
    delta: Mapping[str, object] | None = None, usage: Mapping[str, object] | None = None, **extra: object
) -> bytes:
    """One chat chunk as OpenAI frames it, `obfuscation` padding included."""
    doc: dict[str, object] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-5.5-2026-04-23",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}],
        "usage": usage,
        "obfuscation": "q8Zr1",
        **extra,
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


CACHED_USAGE = {
    "prompt_tokens": 2000,
    "completion_tokens": 300,
    "total_tokens": 2300,
    "prompt_tokens_details": {"cached_tokens": 1500, "cache_write_tokens": 400, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 120, "audio_tokens": 0},
}


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_chat_stream_of_wire_2_4_under_any_chunking(newline: bytes) -> None:
    data = WIRE_2_4.replace(b"\n", newline)
    rng = random.Random(24)
    for _ in range(30):
        result = run(ChatUsage(CHAT_REQUEST, "gpt-4o", "openai"), split_randomly(data, rng))
        assert result.usage == Usage(input_tokens=79, output_tokens=1)
        assert (result.source, result.model, result.error_type) == ("reported", "gpt-4o-2024-08-06", None)


def test_chat_cached_and_written_prompt_tokens_are_taken_out_of_input() -> None:
    stream = chunk({"content": "Hi"}) + chunk(None, CACHED_USAGE) + b"data: [DONE]\n\n"
    result = run(ChatUsage(CHAT_REQUEST, "gpt-5.5", "openai"), stream)
    # 2000 prompt tokens = 100 uncached + 1500 read from cache + 400 written to it
    expected = Usage(
        input_tokens=2000 - 1500 - 400, output_tokens=300, cache_write_5m_tokens=400, cache_read_tokens=1500
    )
    assert result.usage == expected
    assert result.model == "gpt-5.5-2026-04-23"


@pytest.mark.parametrize(
    ("provider", "output"),
    [("openai", 300), ("anthropic", 300), ("google", 300), ("xai", 300 + 120)],  # xAI: reasoning apart
)
def test_chat_reasoning_tokens_are_added_for_xai_only(provider: str, output: int) -> None:
    result = run(ChatUsage(CHAT_REQUEST, "m", provider), chunk(None, CACHED_USAGE) + b"data: [DONE]\n\n")
    assert result.usage is not None
    assert result.usage.output_tokens == output


def test_chat_padded_json_and_usage_inside_the_last_content_chunk() -> None:
    # Gemini's compatibility layer: usage rides on the final content chunk; JSON padded with spaces.
    usage = {"prompt_tokens": 12, "completion_tokens": 40, "completion_tokens_details": {"reasoning_tokens": 30}}
    first = chunk({"role": "assistant", "content": "Sure"})
    last = chunk({"content": "!"}, usage).replace(b"}\n\n", b"}            \n\n")
    stream = first + last.replace(b'"usage":', b'"usage" :   ') + b"data: [DONE]\n\n"
    result = run(ChatUsage(CHAT_REQUEST, "gemini-3-flash-preview", "google"), stream)
    assert result.usage == Usage(input_tokens=12, output_tokens=40)
    assert result.source == "reported"


def test_chat_later_usage_replaces_earlier() -> None:
    early = {"prompt_tokens": 12, "completion_tokens": 5}
    final = {"prompt_tokens": 12, "completion_tokens": 9}
    stream = chunk({"content": "a"}, early) + chunk({"content": "b"}, final) + b"data: [DONE]\n\n"
    assert run(ChatUsage(CHAT_REQUEST, "m", "google"), stream).usage == Usage(input_tokens=12, output_tokens=9)


def test_chat_json_body_wire_2_3_gzip() -> None:
    body = json.dumps(
        {
            "id": "chatcmpl-A652Fhuqsr1kskKe5B63M0eiw3842",
            "object": "chat.completion",
            "model": "gpt-4-0613",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "This is a test!"}}],
            "usage": {
                "prompt_tokens": 13,
                "completion_tokens": 5,
                "total_tokens": 18,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
        }
    ).encode()
    compressed = gzip.compress(body)
    chunks = [compressed[:7], compressed[7:30], compressed[30:]]
    result = run(ChatUsage(b"{}", "gpt-4", "openai"), chunks, JSON, encoding="gzip")
    assert result.usage == Usage(input_tokens=13, output_tokens=5)
    assert (result.source, result.model) == ("reported", "gpt-4-0613")


def test_chat_stream_without_include_usage_is_estimated() -> None:
    stream = (
        chunk({"role": "assistant", "content": ""})
        + chunk({"content": "Hello"})
        + chunk({"content": " world"})
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"loc'}}]})
        + chunk({"reasoning_content": "Thinking about it"})
        + chunk({}, finish_reason="stop")
        + b"data: [DONE]\n\n"
    )
    result = run(ChatUsage(CHAT_REQUEST, "gpt-5.5", "openai"), stream)
    # 4 pieces of text, 5 + 6 + 5 + 17 = 33 characters: ceil(33 / 4) = 9 beats 4 deltas.
    assert result.usage == Usage(input_tokens=CHAT_REQUEST_TOKENS, output_tokens=9)
    assert result.source == "estimated"


def test_chat_one_token_deltas_count_one_each() -> None:
    stream = b"".join(chunk({"content": piece}) for piece in ["I", " am", " a", " bot", "."]) + b"data: [DONE]\n\n"
    result = run(ChatUsage(CHAT_REQUEST, "gpt-5.5", "openai"), stream)
    assert result.usage == Usage(input_tokens=CHAT_REQUEST_TOKENS, output_tokens=5)  # 5 deltas > ceil(12 / 4)


def test_chat_stream_cut_before_usage_is_estimated() -> None:
    stream = chunk({"content": "Hello"}) + chunk({"content": " world"})
    result = run(ChatUsage(CHAT_REQUEST, "gpt-5.5", "openai"), stream + b'data: {"id":', complete=False)
    assert result.usage == Usage(input_tokens=CHAT_REQUEST_TOKENS, output_tokens=3)  # ceil(11 / 4)
    assert result.source == "estimated"


def test_chat_stream_cut_after_usage_keeps_it() -> None:
    stream = chunk({"content": "Hello"}) + chunk(None, CACHED_USAGE)
    result = run(ChatUsage(CHAT_REQUEST, "gpt-5.5", "openai"), stream, complete=False)
    assert result.usage == Usage(input_tokens=100, output_tokens=300, cache_write_5m_tokens=400, cache_read_tokens=1500)
    assert result.source == "estimated"
    # ... while [DONE] says it was the final word even if the connection then broke.
    done = run(ChatUsage(CHAT_REQUEST, "gpt-5.5", "openai"), stream + b"data: [DONE]\n\n", complete=False)
    assert done.source == "reported"


def test_chat_midstream_error_chunk() -> None:
    error = (
        b'data: {"error":{"message":"The server had an error while processing your request.",'
        b'"type":"server_error","param":null,"code":null}}\n\n'
    )
    result = run(ChatUsage(CHAT_REQUEST, "gpt-5.5", "openai"), chunk({"content": "Hi"}) + error)
    assert (result.usage, result.source, result.error_type) == (None, "none", "server_error")


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (
            429,
            b'{"error":{"message":"Rate limit reached for ...","type":"requests","param":null,'
            b'"code":"rate_limit_exceeded"}}',
            "requests",
        ),
        (
            401,
            b'{"error":{"message":"Incorrect API key provided: sk-...","type":"invalid_request_error",'
            b'"param":null,"code":"invalid_api_key"}}',
            "invalid_request_error",
        ),
        (400, b'{"error":{"message":"x","type":null,"code":"context_length_exceeded"}}', "context_length_exceeded"),
        (429, b'[{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}]', "RESOURCE_EXHAUSTED"),
        (500, b'{"error":{"message":"x","type":"Something <b>bad</b> happened","code":500}}', None),
        (500, b'{"error":"upstream timed out"}', None),
        (502, b"<html>Bad gateway</html>", None),
    ],
)
def test_chat_error_bodies(status: int, body: bytes, error_type: str | None) -> None:
    result = run(ChatUsage(CHAT_REQUEST, "gpt-5.5", "openai"), body, JSON, status=status)
    assert (result.usage, result.source, result.error_type) == (None, "none", error_type)


@pytest.mark.parametrize(
    "garbage",
    [
        b"data: not json\n\ndata: [DONE]\n\n",
        b'data: {"usage":{"prompt_tokens":"many"}}\n\ndata: [DONE]\n\n',
        b'data: {"choices":[{"delta":{"content":7}}]}\n\ndata: [DONE]\n\n',
        b"data: [1,2,3]\n\n",
        b'data: {"usage":{"prompt_tokens":-5,"completion_tokens":3}}\n\n',
    ],
)
def test_chat_malformed_stream_never_raises(garbage: bytes) -> None:
    result = run(ChatUsage(CHAT_REQUEST, "gpt-5.5", "openai"), garbage)
    assert result.source in ("reported", "estimated")
    assert result.usage is not None
    assert result.usage.input_tokens >= 0


def test_chat_malformed_request_body_still_estimates() -> None:
    result = run(ChatUsage(b"\x00not json at all!", "gpt-5.5", "openai"), chunk({"content": "Hi"}), complete=False)
    assert result.usage == Usage(input_tokens=5, output_tokens=1)  # 17 bytes: ceil(17 / 4)


# --- responses ---------------------------------------------------------------------------------

RESPONSES_REQUEST = (
    b'{"model":"gpt-5.5","instructions":"Be brief.","input":"Write a haiku about the sea.","stream":true}'
)
# o200k_base: "Be brief.\nWrite a haiku about the sea." is 11 tokens; no role-framed messages.
RESPONSES_REQUEST_TOKENS = 11


def event(data: Mapping[str, object], name: bool = True) -> bytes:
    line = b"event: " + str(data["type"]).encode() + b"\n" if name else b""
    return line + b"data: " + json.dumps(data).encode() + b"\n\n"


def responses_stream(usage: dict[str, object], final: str = "response.completed", names: bool = True) -> bytes:
    head = {"id": "resp_123", "object": "response", "status": "in_progress", "model": "gpt-5.5-2026-04-23"}
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {**head, "usage": None}},
        {"type": "response.in_progress", "sequence_number": 1, "response": {**head, "usage": None}},
        {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1", "delta": "Waves fold"},
        {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1", "delta": " on grey sand"},
        {"type": "response.output_text.done", "sequence_number": 4, "text": "Waves fold on grey sand"},
        {
            "type": final,
            "sequence_number": 5,
            "response": {**head, "status": final.split(".")[1], "output": [], "usage": usage, "error": None},
        },
    ]
    return b"".join(event(e, names) for e in events)


RESPONSES_USAGE = {
    "input_tokens": 125,
    "input_tokens_details": {"cached_tokens": 98, "cache_write_tokens": 0},
    "output_tokens": 48,
    "output_tokens_details": {"reasoning_tokens": 30},
    "total_tokens": 173,
}


@pytest.mark.parametrize("names", [True, False])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_responses_stream_under_any_chunking(names: bool, newline: bytes) -> None:
    data = responses_stream(RESPONSES_USAGE, names=names).replace(b"\n", newline)
    rng = random.Random(28)
    for _ in range(20):
        result = run(ResponsesUsage(RESPONSES_REQUEST, "gpt-5.5", "openai"), split_randomly(data, rng))
        # Responses: input_tokens include the 98 cached; output_tokens include the 30 of reasoning
        assert result.usage == Usage(input_tokens=125 - 98, output_tokens=48, cache_read_tokens=98)
        assert (result.source, result.model) == ("reported", "gpt-5.5-2026-04-23")


def test_responses_cache_writes() -> None:
    usage = {
        "input_tokens": 5000,
        "input_tokens_details": {
            "cached_tokens": 1000,
            "cache_write_tokens": 2000,
            "cache_write_tokens_details": {"ttl_30m_tokens": 2000, "ttl_12h_tokens": 0},
        },
        "output_tokens": 10,
    }
    result = run(ResponsesUsage(RESPONSES_REQUEST, "gpt-5.6", "openai"), responses_stream(usage))
    assert result.usage == Usage(
        input_tokens=2000, output_tokens=10, cache_write_5m_tokens=2000, cache_read_tokens=1000
    )


def test_responses_xai_keeps_output_tokens_as_sent() -> None:
    # genai-prices' x-ai `responses` extractor does not add reasoning_tokens (unlike its `chat` one).
    result = run(ResponsesUsage(RESPONSES_REQUEST, "grok-4.3", "xai"), responses_stream(RESPONSES_USAGE))
    assert result.usage is not None
    assert result.usage.output_tokens == 48


@pytest.mark.parametrize("final", ["response.incomplete", "response.failed"])
def test_responses_incomplete_and_failed_carry_usage(final: str) -> None:
    result = run(ResponsesUsage(RESPONSES_REQUEST, "gpt-5.5", "openai"), responses_stream(RESPONSES_USAGE, final))
    assert result.usage == Usage(input_tokens=27, output_tokens=48, cache_read_tokens=98)
    assert result.source == "reported"


def test_responses_failed_error_code() -> None:
    failed = {
        "type": "response.failed",
        "sequence_number": 3,
        "response": {
            "id": "resp_1",
            "status": "failed",
            "model": "gpt-5.5",
            "error": {"code": "server_error", "message": "The model failed."},
            "usage": {"input_tokens": 10, "output_tokens": 0},
        },
    }
    result = run(ResponsesUsage(RESPONSES_REQUEST, "gpt-5.5", "openai"), event(failed))
    assert (result.usage, result.error_type) == (Usage(input_tokens=10), "server_error")


def test_responses_error_event() -> None:
    error = {
        "type": "error",
        "code": "rate_limit_exceeded",
        "message": "Slow down",
        "param": None,
        "sequence_number": 2,
    }
    result = run(ResponsesUsage(RESPONSES_REQUEST, "gpt-5.5", "openai"), event(error))
    assert (result.usage, result.source, result.error_type) == (None, "none", "rate_limit_exceeded")


def test_responses_cut_stream_is_estimated() -> None:
    data = responses_stream(RESPONSES_USAGE)
    cut = data[: data.index(b"event: response.output_text.done")]
    result = run(ResponsesUsage(RESPONSES_REQUEST, "gpt-5.5", "openai"), cut, complete=False)
    # relayed "Waves fold" + " on grey sand": 2 deltas, 23 characters -> ceil(23 / 4) = 6
    assert result.usage == Usage(input_tokens=RESPONSES_REQUEST_TOKENS, output_tokens=6)
    assert (result.source, result.model) == ("estimated", "gpt-5.5-2026-04-23")


def test_responses_json_body() -> None:
    body = json.dumps(
        {
            "id": "resp_1",
            "object": "response",
            "status": "completed",
            "model": "gpt-5.5",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}],
            "usage": RESPONSES_USAGE,
            "error": None,
            "incomplete_details": None,
        }
    ).encode()
    result = run(ResponsesUsage(RESPONSES_REQUEST, "gpt-5.5", "openai"), body, JSON)
    assert result.usage == Usage(input_tokens=27, output_tokens=48, cache_read_tokens=98)
    assert result.source == "reported"
    error = b'{"error":{"message":"No such model","type":"invalid_request_error","param":"model","code":null}}'
    failed = run(ResponsesUsage(RESPONSES_REQUEST, "gpt-5.5", "openai"), error, JSON, status=404)
    assert (failed.usage, failed.error_type) == (None, "invalid_request_error")


# --- embeddings --------------------------------------------------------------------------------


def test_embeddings_body() -> None:
    body = (
        b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,'
        b'-0.0028842222]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}'
    )
    result = run(EmbeddingsUsage(b"{}", "text-embedding-3-small", "openai"), body, JSON)
    assert result.usage == Usage(input_tokens=8)
    assert (result.source, result.model) == ("reported", "text-embedding-3-small")


@pytest.mark.parametrize(
    ("request_body", "tokens"),
    [
        # cl100k_base: 10 tokens
        (b'{"input":"The food was delicious and the waiter was friendly.","model":"text-embedding-3-small"}', 10),
        (b'{"input":["The food was delicious and the waiter was friendly.","Hello"]}', 10 + 1),
        (b'{"input":[[1,2,3],[4,5]]}', 5),  # already tokens
        (b'{"input":[10,20,30]}', 3),
        (b"junk", 1),  # not JSON: ceil(4 bytes / 4)
    ],
)
def test_embeddings_cut_is_estimated(request_body: bytes, tokens: int) -> None:
    result = run(
        EmbeddingsUsage(request_body, "text-embedding-3-small", "openai"), b'{"object":"li', JSON, complete=False
    )
    assert (result.usage, result.source) == (Usage(input_tokens=tokens), "estimated")


def test_embeddings_error_body() -> None:
    body = b'{"error":{"message":"x","type":"invalid_request_error","param":null,"code":null}}'
    result = run(EmbeddingsUsage(b"{}", "text-embedding-3-small", "openai"), body, JSON, status=400)
    assert (result.usage, result.error_type) == (None, "invalid_request_error")
