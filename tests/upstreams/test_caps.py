"""Every vendor's rules when the meter gives up on part of an answer (over its cap).

What went unread counts as output for the estimate (never for embeddings, which bill input only),
the vendor's reported figures are a floor, and the result says why it is an estimate.
"""

from __future__ import annotations

import base64
import json

from meter_support import JSON, run

from buzz.billing.usage import Usage
from buzz.config import METER_MAX_BYTES
from buzz.upstreams.google import GeminiUsage
from buzz.upstreams.openai import ChatUsage, EmbeddingsUsage, ResponsesUsage
from fakes.google_sse import generate_content_json, usage_metadata
from fakes.openai_sse import chat_stream_chunks, chat_usage, embeddings_json, responses_stream_events, responses_usage

REQUEST = b'{"model":"gpt-5.5","input":"Hello","stream":true}'
REQUEST_TOKENS = 1  # "Hello" in o200k_base, no role-framed messages


def test_a_responses_completed_event_over_the_cap_is_estimated_from_the_deltas() -> None:
    pieces = ["word " * 100] * 10  # ten deltas of 500 characters; the last events repeat all 5000
    events = responses_stream_events("gpt-5.5", pieces, responses_usage(7, 1250))
    completed = events[-1]
    assert len(completed) > 5000 and all(len(e) < 2000 for e in events if b"text.delta" in e)
    result = run(ResponsesUsage(REQUEST, "gpt-5.5", "openai"), events, max_bytes=2000)
    assert (result.source, result.usage_note, result.model) == ("estimated", "event_over_cap", "gpt-5.5")
    # No usage read: input from the request, output from the deltas plus the skipped events.
    assert result.usage is not None
    assert result.usage.input_tokens == REQUEST_TOKENS
    assert (5000 + len(completed)) // 4 < result.usage.output_tokens < sum(map(len, events)) // 4


def test_a_responses_completed_event_with_a_long_answer_fits_the_default_cap() -> None:
    pieces = ["All work and no play. "] * 40_000  # about 880 KB of text, repeated in the final event
    events = responses_stream_events("gpt-5.5", pieces, responses_usage(7, 200_000))
    result = run(ResponsesUsage(REQUEST, "gpt-5.5", "openai"), events)
    assert (result.source, result.usage_note) == ("reported", None)
    assert result.usage == Usage(input_tokens=7, output_tokens=200_000)


def test_a_chat_delta_over_the_cap_is_skipped_and_the_usage_chunk_still_read() -> None:
    chunks = chat_stream_chunks("gpt-5.5", ["Hi", "x" * 5000, "!"], chat_usage(40, 3))
    result = run(ChatUsage(REQUEST, "gpt-5.5", "openai"), chunks, max_bytes=2000)
    assert (result.source, result.usage_note) == ("estimated", "event_over_cap")
    assert result.usage is not None
    assert result.usage.input_tokens == 40  # reported, from the chunk after the skipped one
    assert result.usage.output_tokens >= 5000 // 4  # the reported 3 is only a floor


def test_an_embeddings_body_over_the_cap_bills_its_input_from_the_request() -> None:
    request = b'{"model":"text-embedding-3-small","input":["Hello","Hello"]}'
    body = embeddings_json("text-embedding-3-small", [[0.25] * 1536] * 2, 2)
    result = run(EmbeddingsUsage(request, "text-embedding-3-small", "openai"), body, JSON, max_bytes=len(body) - 1)
    assert (result.source, result.usage_note) == ("estimated", "body_over_cap")
    assert result.usage == Usage(input_tokens=2)  # vectors are not output


def test_a_gemini_body_with_an_inline_image_fits_the_default_cap() -> None:
    image = base64.b64encode(bytes(range(256)) * 8192).decode()  # 2 MiB of PNG-like bytes
    doc = json.loads(generate_content_json("gemini-2.5-flash-image", "Here:", usage_metadata(10, 1290)))
    doc["candidates"][0]["content"]["parts"].append({"inlineData": {"mimeType": "image/png", "data": image}})
    body = json.dumps(doc).encode()
    assert 2 * 1024 * 1024 < len(body) < METER_MAX_BYTES
    result = run(GeminiUsage(b"{}", "gemini-2.5-flash-image"), body, JSON)
    assert (result.source, result.usage_note, result.usage) == ("reported", None, Usage(10, 1290))
    over = run(GeminiUsage(b"{}", "gemini-2.5-flash-image"), body, JSON, max_bytes=1024 * 1024)
    assert (over.source, over.usage_note) == ("estimated", "body_over_cap")
    assert over.usage == Usage(input_tokens=0, output_tokens=-(-len(body) // 4))
