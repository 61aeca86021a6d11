"""Exact bytes of native Gemini API responses, for fake upstreams.

Pure functions: the same arguments give the same bytes (`responseId`s left to default are hashes
of the arguments). JSON is compact UTF-8 unless `indent` asks for Google's pretty-printed style.

`streamGenerateContent?alt=sse` is a series of `data: JSON` events with no `event:` line and no
`[DONE]`, separated by CRLF (`\\r\\n\\r\\n`) as real Gemini sends them; every chunk repeats the
running `usageMetadata` and the last one has `finishReason`. Without `alt=sse` the same objects
form one JSON array written in pieces: `[{…}`, `,\\r\\n{…}`, …, `]`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from fakes.replies import dumps, stable_token

JsonObject = Mapping[str, Any]

DEFAULT_MODELS: tuple[tuple[str, str], ...] = (
    ("gemini-2.5-flash", "Gemini 2.5 Flash"),
    ("gemini-2.5-pro", "Gemini 2.5 Pro"),
    ("gemini-3-flash-preview", "Gemini 3 Flash Preview"),
)


def _json(obj: object, indent: int | None) -> bytes:
    return dumps(obj) if indent is None else json.dumps(obj, indent=indent, ensure_ascii=False).encode()


def usage_metadata(
    prompt_tokens: int,
    candidates_tokens: int,
    *,
    thoughts_tokens: int | None = None,
    cached_tokens: int | None = None,
) -> dict[str, Any]:
    """`usageMetadata` in the wire's camelCase. `promptTokenCount` includes the cached tokens;
    thoughts are outside `candidatesTokenCount` but inside `totalTokenCount`. None omits a field,
    as Gemini omits counters that do not apply."""
    usage: dict[str, Any] = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": candidates_tokens}
    if cached_tokens is not None:
        usage["cachedContentTokenCount"] = cached_tokens
    if thoughts_tokens is not None:
        usage["thoughtsTokenCount"] = thoughts_tokens
    usage["totalTokenCount"] = prompt_tokens + candidates_tokens + (thoughts_tokens or 0)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt_tokens}]
    if cached_tokens is not None:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached_tokens}]
    return usage


def running_usage(final: JsonObject, done: int, total: int) -> dict[str, Any]:
    """The usage chunk `done` of `total` reports: candidates grow with the text; prompt, cache
    and thought counts are known from the first chunk on."""
    usage = dict(final)
    candidates = int(final.get("candidatesTokenCount", 0)) * done // max(1, total)
    usage["candidatesTokenCount"] = candidates
    prompt = int(final.get("promptTokenCount", 0))
    usage["totalTokenCount"] = prompt + candidates + int(final.get("thoughtsTokenCount", 0))
    return usage


def generate_content_object(
    model: str,
    text: str,
    usage: JsonObject,
    *,
    finish_reason: str | None = "STOP",
    response_id: str,
) -> dict[str, Any]:
    """One `GenerateContentResponse`; `finish_reason=None` for the chunks before a stream's last."""
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    candidate["index"] = 0
    return {"candidates": [candidate], "usageMetadata": dict(usage), "modelVersion": model, "responseId": response_id}


def generate_content_json(
    model: str,
    text: str,
    usage: JsonObject,
    *,
    response_id: str | None = None,
    indent: int | None = None,
) -> bytes:
    """A non-streaming `:generateContent` answer."""
    rid = response_id or stable_token(model, text, length=22)
    return _json(generate_content_object(model, text, usage, response_id=rid), indent)


def stream_objects(
    model: str,
    pieces: Sequence[str],
    usage: JsonObject,
    *,
    response_id: str | None = None,
) -> list[dict[str, Any]]:
    """One `GenerateContentResponse` per text piece, with running usage; the last has `finishReason`."""
    rid = response_id or stable_token(model, tuple(pieces), length=22)
    n = len(pieces)
    return [
        generate_content_object(
            model,
            piece,
            running_usage(usage, i + 1, n),
            finish_reason="STOP" if i == n - 1 else None,
            response_id=rid,
        )
        for i, piece in enumerate(pieces)
    ]


def sse_events(objects: Sequence[JsonObject], *, crlf: bool = True, indent: int | None = None) -> list[bytes]:
    """`data: JSON` events, each ended by a blank line: CRLF as Gemini sends it, or LF.

    Pretty-printed JSON spans lines, so each of its lines gets its own `data: ` prefix."""
    eol = b"\r\n" if crlf else b"\n"
    out = []
    for obj in objects:
        lines = _json(obj, indent).split(b"\n")
        out.append(b"".join(b"data: " + line + eol for line in lines) + eol)
    return out


def json_array_chunks(objects: Sequence[JsonObject], *, indent: int | None = None) -> list[bytes]:
    """The array form of a stream, one piece per object and the closing `]` on its own:
    `[{…}`, `,\\r\\n{…}`, …, `]`."""
    out = [(b"[" if i == 0 else b",\r\n") + _json(obj, indent) for i, obj in enumerate(objects)]
    return [*out, b"]"] if out else [b"[]"]


def stream_generate_content_events(
    model: str,
    pieces: Sequence[str],
    usage: JsonObject,
    *,
    response_id: str | None = None,
    crlf: bool = True,
) -> list[bytes]:
    """A `:streamGenerateContent?alt=sse` answer."""
    return sse_events(stream_objects(model, pieces, usage, response_id=response_id), crlf=crlf)


def stream_generate_content_array(
    model: str,
    pieces: Sequence[str],
    usage: JsonObject,
    *,
    response_id: str | None = None,
    indent: int | None = None,
) -> list[bytes]:
    """A `:streamGenerateContent` answer without `alt=sse`: one JSON array, written in pieces."""
    return json_array_chunks(stream_objects(model, pieces, usage, response_id=response_id), indent=indent)


def error_object(code: int, status: str, message: str, details: Sequence[JsonObject] | None = None) -> dict[str, Any]:
    """Google's `{"error": {code, message, status[, details]}}` envelope."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = [dict(d) for d in details]
    return {"error": error}


def error_body(
    code: int,
    status: str,
    message: str,
    *,
    array: bool = False,
    details: Sequence[JsonObject] | None = None,
    indent: int | None = None,
) -> bytes:
    """The error envelope, or `[{"error": …}]` (`array=True`) as the OpenAI layer and the
    JSON-array stream send it."""
    obj = error_object(code, status, message, details)
    return _json([obj] if array else obj, indent)


def retry_info(delay_seconds: float) -> dict[str, Any]:
    """The `google.rpc.RetryInfo` detail a 429 commonly carries (unverified)."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay_seconds:g}s"}


def model_info(model_id: str, display_name: str | None = None) -> dict[str, Any]:
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": display_name or model_id,
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "thinking": True,
    }


def models_list_json(models: Sequence[tuple[str, str]] = DEFAULT_MODELS) -> bytes:
    """`GET /{ver}/models`: every model on one page, so no `nextPageToken`."""
    return dumps({"models": [model_info(m, name) for m, name in models]})


def count_tokens_json(total_tokens: int) -> bytes:
    details = [{"modality": "TEXT", "tokenCount": total_tokens}]
    return dumps({"totalTokens": total_tokens, "promptTokensDetails": details})


def _values(content: object, dimensions: int) -> list[float]:
    """A deterministic vector for a `Content`, exact in float32."""
    seed = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).digest()
    return [(seed[i % len(seed)] - 128) / 256 for i in range(dimensions)]


def embed_content_json(content: object, dimensions: int = 8, prompt_tokens: int | None = None) -> bytes:
    """`:embedContent`: one `embedding`; `usageMetadata` only when `prompt_tokens` is given."""
    out: dict[str, Any] = {"embedding": {"values": _values(content, dimensions)}}
    if prompt_tokens is not None:
        out["usageMetadata"] = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
    return dumps(out)


def batch_embed_contents_json(
    contents: Sequence[object], dimensions: int = 8, prompt_tokens: int | None = None
) -> bytes:
    """`:batchEmbedContents`: one embedding per request, in order; `usageMetadata` as above."""
    out: dict[str, Any] = {"embeddings": [{"values": _values(content, dimensions)} for content in contents]}
    if prompt_tokens is not None:
        out["usageMetadata"] = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
    return dumps(out)
