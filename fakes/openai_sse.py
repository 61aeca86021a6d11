"""Exact bytes of OpenAI-format responses, for fake upstreams.

Pure functions: the same arguments give the same bytes (ids left to default are hashes of the
arguments, `created` is an argument), so a test can build a reply twice and compare. Stream
builders return one `bytes` per SSE event, the way the real API writes them. JSON is compact
UTF-8 with non-ASCII kept raw.

Chat streams are `data: JSON` events without `event:` lines, ended by `data: [DONE]`.
Responses streams carry an `event: TYPE` line before each `data:` line and no `[DONE]`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from fakes.replies import dumps, stable_token

JsonObject = Mapping[str, Any]

# 2026-01-01T00:00:00Z: builders are pure, so a fixed default stands in for "now".
DEFAULT_CREATED = 1767225600

DEFAULT_MODELS: tuple[str, ...] = ("gpt-5.5", "gpt-5.5-mini", "o4-mini", "text-embedding-3-small")
XAI_MODELS: tuple[str, ...] = ("grok-4", "grok-4-fast-reasoning", "grok-code-fast-1")

DONE = b"data: [DONE]\n\n"
SYSTEM_FINGERPRINT = "fp_fake0000"


def data_event(payload: JsonObject | bytes) -> bytes:
    """`data: JSON\\n\\n`; bytes are used verbatim."""
    return b"data: " + (payload if isinstance(payload, bytes) else dumps(payload)) + b"\n\n"


def sse_event(name: str, payload: JsonObject | bytes) -> bytes:
    """`event: NAME\\ndata: JSON\\n\\n`, the Responses API framing."""
    return b"event: " + name.encode() + b"\n" + data_event(payload)


def chat_usage(
    prompt_tokens: int,
    completion_tokens: int,
    *,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    reasoning_separate: bool = False,
    details: bool = True,
) -> dict[str, Any]:
    """Chat `usage`. OpenAI counts reasoning inside `completion_tokens`; xAI
    (`reasoning_separate=True`) reports it on top, so only the total includes it.
    `details=False` leaves out the `*_details` objects, as Anthropic's OpenAI layer does."""
    total = prompt_tokens + completion_tokens + (reasoning_tokens if reasoning_separate else 0)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }
    if details:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def responses_usage(
    input_tokens: int,
    output_tokens: int,
    *,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    reasoning_separate: bool = False,
) -> dict[str, Any]:
    """Responses API `usage`; `reasoning_separate` as in `chat_usage`."""
    total = input_tokens + output_tokens + (reasoning_tokens if reasoning_separate else 0)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": total,
    }


def error_object(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": type, "param": param, "code": code}


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> bytes:
    """OpenAI's error envelope: no top-level `type`, everything inside `error`."""
    return dumps({"error": error_object(message, type, param, code)})


def stream_error_event(
    message: str, type: str = "server_error", param: str | None = None, code: str | None = None
) -> bytes:
    """The `data: {"error": …}` event a chat stream can end with."""
    return data_event({"error": error_object(message, type, param, code)})


def chat_completion_json(
    model: str,
    text: str,
    usage: JsonObject | None,
    *,
    completion_id: str | None = None,
    created: int = DEFAULT_CREATED,
    finish_reason: str = "stop",
) -> bytes:
    """A non-streaming chat completion."""
    cid = completion_id or "chatcmpl-" + stable_token(model, text, finish_reason)
    return dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": dict(usage) if usage is not None else None,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
    )


def _obfuscation(chunk: JsonObject) -> str:
    # Real padding varies in length with the content it hides; a hash keeps that, and purity.
    digest = hashlib.sha256(dumps(chunk)).digest()
    return stable_token(digest, length=1 + digest[0] % 16)


def chat_stream_chunks(
    model: str,
    pieces: Sequence[str],
    usage: JsonObject | None,
    *,
    completion_id: str | None = None,
    created: int = DEFAULT_CREATED,
    finish_reason: str = "stop",
    null_usage: bool = True,
    usage_in_final_chunk: bool = False,
    obfuscation: bool = False,
    done: bool = True,
) -> list[bytes]:
    """A streamed chat completion: a role chunk, one chunk per text piece, a
    finish chunk, then (if `usage` is given) a usage chunk with `"choices": []`, then `[DONE]`.

    `usage` is what `stream_options.include_usage` asks for; without it the stream has none.
    `null_usage` puts `"usage": null` in every chunk without usage. `usage_in_final_chunk` puts
    usage in the finish chunk instead of its own, as Gemini's OpenAI layer does.
    `obfuscation` adds the random `obfuscation` padding field OpenAI sends by default.
    """
    cid = completion_id or "chatcmpl-" + stable_token(model, tuple(pieces), finish_reason)

    def chunk(choices: list[dict[str, Any]], chunk_usage: JsonObject | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if chunk_usage is not None:
            out["usage"] = dict(chunk_usage)
        elif null_usage:
            out["usage"] = None
        if obfuscation:
            out["obfuscation"] = _obfuscation(out)
        return out

    def choice(delta: JsonObject, finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}]

    chunks = [
        chunk(choice({"role": "assistant", "content": "", "refusal": None}), None),
        *(chunk(choice({"content": p}), None) for p in pieces),
    ]
    if usage_in_final_chunk:
        chunks.append(chunk(choice({}, finish_reason), usage))
    else:
        chunks.append(chunk(choice({}, finish_reason), None))
        if usage is not None:
            chunks.append(chunk([], usage))
    return [data_event(c) for c in chunks] + ([DONE] if done else [])


def chat_stream_error_chunks(
    model: str,
    pieces: Sequence[str],
    *,
    message: str = "The server had an error while processing your request. Sorry about that!",
    type: str = "server_error",
    code: str | None = None,
    created: int = DEFAULT_CREATED,
) -> list[bytes]:
    """A chat stream that starts well, then ends with a `data: {"error": …}` event and no `[DONE]`."""
    head = chat_stream_chunks(model, pieces, None, created=created, done=False)[:-1]  # no finish chunk
    return [*head, stream_error_event(message, type, None, code)]


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    )
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def response_object(
    model: str,
    text: str | None,
    usage: JsonObject | None,
    *,
    response_id: str,
    created_at: int = DEFAULT_CREATED,
    status: str = "completed",
) -> dict[str, Any]:
    """A Responses API `response` object; `text=None` leaves `output` empty (as in `response.created`)."""
    output = [] if text is None else [_message_item("msg_" + response_id.removeprefix("resp_"), text, "completed")]
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": dict(usage) if usage is not None else None,
        "user": None,
        "metadata": {},
    }


def response_json(
    model: str,
    text: str,
    usage: JsonObject,
    *,
    response_id: str | None = None,
    created_at: int = DEFAULT_CREATED,
) -> bytes:
    """A completed non-streaming Responses API result."""
    rid = response_id or "resp_" + stable_token(model, text)
    return dumps(response_object(model, text, usage, response_id=rid, created_at=created_at))


def _responses_events(model: str, pieces: Sequence[str], rid: str, created_at: int) -> list[dict[str, Any]]:
    item_id = "msg_" + rid.removeprefix("resp_")
    text = "".join(pieces)
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    pending = response_object(model, None, None, response_id=rid, created_at=created_at, status="in_progress")
    return [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {"type": "response.output_item.added", "output_index": 0, "item": _message_item(item_id, "", "in_progress")},
        {"type": "response.content_part.added", **where, "part": part},
        *({"type": "response.output_text.delta", **where, "delta": p, "logprobs": []} for p in pieces),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": _message_item(item_id, text, "completed")},
    ]


def _sequenced(events: list[dict[str, Any]]) -> list[bytes]:
    return [sse_event(e["type"], {**e, "sequence_number": n}) for n, e in enumerate(events)]


def responses_stream_events(
    model: str,
    pieces: Sequence[str],
    usage: JsonObject,
    *,
    response_id: str | None = None,
    created_at: int = DEFAULT_CREATED,
) -> list[bytes]:
    """A streamed Responses API result: `response.created` (usage null), the output
    item and content part events around one `response.output_text.delta` per piece, then
    `response.completed`, the only event carrying `response.usage`."""
    rid = response_id or "resp_" + stable_token(model, tuple(pieces))
    done = response_object(model, "".join(pieces), usage, response_id=rid, created_at=created_at)
    return _sequenced(
        [*_responses_events(model, pieces, rid, created_at), {"type": "response.completed", "response": done}]
    )


def responses_error_events(
    model: str,
    pieces: Sequence[str],
    *,
    message: str = "The server had an error while processing your request. Sorry about that!",
    code: str = "server_error",
    response_id: str | None = None,
    created_at: int = DEFAULT_CREATED,
) -> list[bytes]:
    """A Responses stream cut short by an `error` event: no `response.completed`, so no usage."""
    rid = response_id or "resp_" + stable_token(model, tuple(pieces), code)
    events = _responses_events(model, pieces, rid, created_at)[: 4 + len(pieces)]
    return _sequenced([*events, {"type": "error", "code": code, "message": message, "param": None}])


def fake_embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic vector whose values are exact in float32, so base64 round trips compare equal."""
    seed = hashlib.sha256(text.encode()).digest()
    return [(seed[i % len(seed)] - 128) / 256 for i in range(dimensions)]


def embeddings_json(
    model: str,
    vectors: Sequence[Sequence[float]],
    prompt_tokens: int,
    *,
    encoding_format: str = "float",
) -> bytes:
    """An embeddings list (OpenAI shape). `encoding_format="base64"` sends each
    vector as base64 of little-endian float32, which the openai SDK asks for by default."""
    data = []
    for index, vector in enumerate(vectors):
        embedding: list[float] | str = list(vector)
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return dumps({"object": "list", "data": data, "model": model, "usage": usage})


def model_object(model_id: str, owned_by: str = "system", created: int = DEFAULT_CREATED) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def models_list_json(model_ids: Sequence[str] = DEFAULT_MODELS, owned_by: str = "system") -> bytes:
    """`GET /v1/models`."""
    return dumps({"object": "list", "data": [model_object(m, owned_by) for m in model_ids]})
