"""What the fake Gemini upstream answers: error replies and the default behaviour.

The default behaviour and its `x-fake-scenario` list are documented in `fakes.fake_google`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, unquote

from fakes import google_sse as sse
from fakes import openai_replies, openai_sse
from fakes.replies import (
    Reply,
    dumps,
    json_delivery,
    json_object,
    scenarios,
    stream_delivery,
    transport_fault,
)

__all__ = [
    "DEFAULT_TEXT_PIECES",
    "GOOGLE_JSON_TYPE",
    "GOOGLE_SSE_TYPE",
    "default_reply",
    "fake_usage_metadata",
    "google_error_reply",
]

DEFAULT_TEXT_PIECES = ("Hello", " from", " the", " fake", " upstream.")
CANDIDATES_TOKENS = 5
THOUGHTS_TOKENS = 3

GOOGLE_JSON_TYPE = "application/json; charset=UTF-8"
GOOGLE_SSE_TYPE = "text/event-stream"

# `models/{model}:{method}` under any API version; the model id may be percent-encoded.
_MODEL_CALL = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):([A-Za-z]+)$")
_MODEL_GET = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+)$")
_MODELS = re.compile(r"^/(v1|v1beta|v1alpha)/models$")

# Only the 429 is verified; the other statuses and texts are Google's usual pairs.
_ERROR_SCENARIOS: MappingProxyType[str, tuple[int, str, str]] = MappingProxyType(
    {
        "error-400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
        "error-403": (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
        "error-404": (404, "NOT_FOUND", "models/x is not found for API version v1beta."),
        "error-429": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
        "error-500": (500, "INTERNAL", "An internal error has occurred. Please retry."),
        "error-503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    }
)


def google_error_reply(
    status: int,
    status_name: str,
    message: str,
    array: bool = False,
    *,
    details: Sequence[Mapping[str, Any]] | None = None,
    retry_delay: float | None = None,
    headers: Sequence[tuple[str, str]] | None = None,
) -> Reply:
    """A Google API error, or its JSON-array form (`array=True`).

    `retry_delay` appends a `google.rpc.RetryInfo` detail. `headers` come last and override.
    """
    all_details = [*(details or ()), *([sse.retry_info(retry_delay)] if retry_delay is not None else [])]
    body = sse.error_body(status, status_name, message, array=array, details=all_details or None)
    return Reply(status=status, headers=[("content-type", GOOGLE_JSON_TYPE), *(headers or ())], body=body)


def _scenario_error(kinds: frozenset[str], array: bool) -> Reply | None:
    for kind in sorted(kinds):
        if kind in _ERROR_SCENARIOS:
            status, name, message = _ERROR_SCENARIOS[kind]
            delay = 1.0 if status == 429 else None
            return google_error_reply(status, name, message, array or "error-array" in kinds, retry_delay=delay)
    return None


def fake_usage_metadata(body: bytes, request: Mapping[str, Any]) -> dict[str, Any]:
    """Deterministic usage from the raw body and its parsed form (see fake_google's docs)."""
    prompt = max(1, len(body) // 4)
    config = request.get("generationConfig")
    thinking = isinstance(config, dict) and "thinkingConfig" in config
    return sse.usage_metadata(
        prompt,
        CANDIDATES_TOKENS,
        thoughts_tokens=THOUGHTS_TOKENS if thinking else None,
        cached_tokens=prompt // 2 if "cachedContent" in request else None,
    )


def _midstream_error() -> dict[str, Any]:
    return sse.error_object(500, "INTERNAL", "An internal error has occurred. Please retry.")


def _wants_sse(query_string: str) -> bool:
    return parse_qs(query_string).get("alt") == ["sse"]


def _generate_reply(model: str, method: str, query_string: str, body: bytes, kinds: frozenset[str]) -> Reply:
    array = method == "streamGenerateContent" and not _wants_sse(query_string)
    request = json_object(body)
    if request is None:
        message = "Invalid JSON payload received."
        return google_error_reply(400, "INVALID_ARGUMENT", message, array or "error-array" in kinds)
    usage = fake_usage_metadata(body, request)
    indent = 2 if "pretty" in kinds else None
    rid = secrets.token_urlsafe(16)
    if method == "generateContent":
        out = sse.generate_content_json(model, "".join(DEFAULT_TEXT_PIECES), usage, response_id=rid, indent=indent)
        return json_delivery(out, kinds, [("content-type", GOOGLE_JSON_TYPE)])
    objects: list[dict[str, Any]] = sse.stream_objects(model, DEFAULT_TEXT_PIECES, usage, response_id=rid)
    if "midstream-error" in kinds:
        objects = [*objects[:2], _midstream_error()]
    if array:
        chunks = sse.json_array_chunks(objects, indent=indent)
        return stream_delivery(chunks, kinds, [("content-type", GOOGLE_JSON_TYPE)])
    chunks = sse.sse_events(objects, crlf="lf" not in kinds, indent=indent)
    return stream_delivery(chunks, kinds, [("content-type", GOOGLE_SSE_TYPE)])


def _embed_reply(rpc: str, body: bytes, kinds: frozenset[str]) -> Reply:
    request = json_object(body)
    if request is None:
        return google_error_reply(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    usage = max(1, len(body) // 4) if "embed-usage" in kinds else None
    if rpc == "embedContent":
        dimensions = request.get("outputDimensionality") or 8
        out = sse.embed_content_json(request.get("content"), dimensions, usage)
    else:
        items = request.get("requests")
        if not isinstance(items, list) or not items:
            return google_error_reply(400, "INVALID_ARGUMENT", "* BatchEmbedContentsRequest.requests: is required")
        dimensions = next((i.get("outputDimensionality") for i in items if isinstance(i, dict)), None) or 8
        contents = [item.get("content") if isinstance(item, dict) else None for item in items]
        out = sse.batch_embed_contents_json(contents, dimensions, usage)
    return json_delivery(out, kinds, [("content-type", GOOGLE_JSON_TYPE)])


def _openai_layer_reply(method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes) -> Reply:
    model_ids = [m for m, _ in sse.DEFAULT_MODELS]
    if method == "GET" and path.endswith("/openai/models"):
        # Google's OpenAI-compatible list names models `models/<id>`, as its native API does.
        listed = [f"models/{m}" for m in model_ids]
        return Reply(body=openai_sse.models_list_json(listed, "google"), headers=[("content-type", GOOGLE_JSON_TYPE)])
    return openai_replies.default_reply(method, path, query_string, headers, body, models=model_ids, owned_by="google")


def _native_reply(method: str, path: str, query_string: str, body: bytes, kinds: frozenset[str]) -> Reply | None:
    if method == "POST" and (call := _MODEL_CALL.match(path)):
        model, rpc = unquote(call[2]), call[3]
        if rpc in ("generateContent", "streamGenerateContent"):
            return _generate_reply(model, rpc, query_string, body, kinds)
        if rpc == "countTokens":
            out = sse.count_tokens_json(max(1, len(body) // 4))
            return json_delivery(out, kinds, [("content-type", GOOGLE_JSON_TYPE)])
        if rpc in ("embedContent", "batchEmbedContents"):
            return _embed_reply(rpc, body, kinds)
    elif method == "GET":
        if _MODELS.match(path):
            return json_delivery(sse.models_list_json(), kinds, [("content-type", GOOGLE_JSON_TYPE)])
        if get := _MODEL_GET.match(path):
            model = unquote(get[2])
            names = dict(sse.DEFAULT_MODELS)
            if model in names:
                return Reply(
                    body=dumps(sse.model_info(model, names[model])), headers=[("content-type", GOOGLE_JSON_TYPE)]
                )
            return google_error_reply(404, "NOT_FOUND", f"models/{model} is not found for API version {get[1]}")
    return None


def default_reply(method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes) -> Reply:
    """Route a request the way generativelanguage.googleapis.com would."""
    kinds = scenarios(headers.get("x-fake-scenario"))
    openai_layer = "/openai/" in path
    if kinds:
        fault = transport_fault(kinds)
        if fault is not None:
            return fault
        # Errors of the OpenAI layer and of the array stream come as `[{"error": …}]`.
        array = openai_layer or (path.endswith(":streamGenerateContent") and not _wants_sse(query_string))
        error = _scenario_error(kinds, array)
        if error is not None:
            return error
    if openai_layer:
        return _openai_layer_reply(method, path, query_string, headers, body)
    reply = _native_reply(method, path, query_string, body, kinds)
    if reply is not None:
        return reply
    return google_error_reply(404, "NOT_FOUND", f"Method not found: {method} {path}")
