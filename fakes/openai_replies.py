"""What the fake OpenAI-format upstream answers: error replies and the default behaviour.

The default behaviour and its `x-fake-scenario` list are documented in `fakes.fake_openai`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from fakes import openai_sse as sse
from fakes.replies import (
    JSON_TYPE,
    Reply,
    dumps,
    header_seconds,
    json_delivery,
    json_object,
    scenarios,
    stream_delivery,
    transport_fault,
)

__all__ = [
    "DEFAULT_TEXT_PIECES",
    "default_reply",
    "fake_chat_usage",
    "fake_responses_usage",
    "go_duration",
    "new_request_id",
    "openai_error_reply",
    "ratelimit_headers",
]

DEFAULT_TEXT_PIECES = ("Hello", " from", " the", " fake", " upstream.")
COMPLETION_TOKENS = 5
REASONING_TOKENS = 2
EMBEDDING_DIMENSIONS = 8

_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"

# (status, type, message, code, param); OpenAI's usual wording, whose exact text is unverified.
_ERROR_SCENARIOS: MappingProxyType[str, tuple[int, str, str, str | None, str | None]] = MappingProxyType(
    {
        "error-400": (
            400,
            "invalid_request_error",
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
            "context_length_exceeded",
            "messages",
        ),
        "error-401": (401, "invalid_request_error", "Incorrect API key provided: sk-fake.", "invalid_api_key", None),
        "error-404": (
            404,
            "invalid_request_error",
            "The model `x` does not exist or you do not have access to it.",
            "model_not_found",
            None,
        ),
        "error-429": (429, "requests", "Rate limit reached for requests", "rate_limit_exceeded", None),
        "error-500": (500, "server_error", _SERVER_ERROR, None, None),
        "error-503": (503, "server_error", "The engine is currently overloaded, please try again later.", None, None),
    }
)


def new_request_id() -> str:
    """An id shaped like OpenAI's `x-request-id` (`req_` and 32 hex digits)."""
    return "req_" + secrets.token_hex(16)


def go_duration(seconds: float) -> str:
    """A Go-style duration (`12ms`, `1s`, `6m0s`), the format of OpenAI's `x-ratelimit-reset-*`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:g}s"
    return f"{int(minutes)}m{text}" if minutes else text


def ratelimit_headers(*, exhausted: bool = False, reset: float = 1.0) -> list[tuple[str, str]]:
    """The `x-ratelimit-*` headers OpenAI sends on every response."""
    remaining_requests, remaining_tokens = (0, 0) if exhausted else (4999, 159976)
    return [
        ("x-ratelimit-limit-requests", "5000"),
        ("x-ratelimit-limit-tokens", "160000"),
        ("x-ratelimit-remaining-requests", str(remaining_requests)),
        ("x-ratelimit-remaining-tokens", str(remaining_tokens)),
        ("x-ratelimit-reset-requests", go_duration(reset if exhausted else 0.012)),
        ("x-ratelimit-reset-tokens", go_duration(reset if exhausted else 0.009)),
    ]


def openai_error_reply(
    status: int,
    type: str,
    message: str,
    code: str | None = None,
    headers: Sequence[tuple[str, str]] | None = None,
    *,
    param: str | None = None,
    retry_after: float | None = 1.0,
    should_retry: bool | None = None,
    request_id: str | None = None,
) -> Reply:
    """An OpenAI error with the headers sent alongside.

    A 429 gets `retry-after` (omit with `retry_after=None`; the SDK gives up on values over
    120 s) and exhausted `x-ratelimit-*` headers. `x-should-retry` is only sent when
    `should_retry` is given. `headers` come last and override the rest.
    """
    out = [("content-type", JSON_TYPE), ("x-request-id", request_id or new_request_id())]
    if status == 429:
        out += ratelimit_headers(exhausted=True, reset=retry_after or 60.0)
        if retry_after is not None:
            out.append(("retry-after", header_seconds(retry_after)))
    if should_retry is not None:
        out.append(("x-should-retry", "true" if should_retry else "false"))
    body = sse.error_body(message, type, param, code)
    return Reply(status=status, headers=out + list(headers or ()), body=body)


def _success_headers() -> list[tuple[str, str]]:
    return [("openai-version", "2020-10-01"), ("openai-processing-ms", "5"), *ratelimit_headers()]


def _is_reasoning_model(model: str) -> bool:
    return model.startswith("o") or "reason" in model


def _usage_counts(body: bytes, request: Mapping[str, Any]) -> tuple[int, int, int]:
    prompt = max(1, len(body) // 4)
    cached = prompt // 2 if "prompt_cache_key" in request else 0
    reasoning = REASONING_TOKENS if _is_reasoning_model(str(request.get("model", ""))) else 0
    return prompt, cached, reasoning


def fake_chat_usage(
    body: bytes, request: Mapping[str, Any], *, reasoning_separate: bool = False, details: bool = True
) -> dict[str, Any]:
    """Deterministic chat usage from the raw body and its parsed form (see fake_openai's docs)."""
    prompt, cached, reasoning = _usage_counts(body, request)
    return sse.chat_usage(
        prompt,
        COMPLETION_TOKENS,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        reasoning_separate=reasoning_separate,
        details=details,
    )


def fake_responses_usage(
    body: bytes, request: Mapping[str, Any], *, reasoning_separate: bool = False
) -> dict[str, Any]:
    """Deterministic Responses API usage, the same counts as `fake_chat_usage`."""
    prompt, cached, reasoning = _usage_counts(body, request)
    return sse.responses_usage(
        prompt,
        COMPLETION_TOKENS,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        reasoning_separate=reasoning_separate,
    )


def _parse(body: bytes) -> tuple[dict[str, Any], str] | Reply:
    request = json_object(body)
    if request is None:
        return openai_error_reply(400, "invalid_request_error", "We could not parse the JSON body of your request.")
    model = request.get("model")
    if not isinstance(model, str):
        return openai_error_reply(400, "invalid_request_error", "you must provide a model parameter", param="model")
    return request, model


def _chat_reply(body: bytes, kinds: frozenset[str], reasoning_separate: bool, usage_details: bool) -> Reply:
    parsed = _parse(body)
    if isinstance(parsed, Reply):
        return parsed
    request, model = parsed
    usage = fake_chat_usage(body, request, reasoning_separate=reasoning_separate, details=usage_details)
    created = int(time.time())
    if request.get("stream") is not True:
        text = "".join(DEFAULT_TEXT_PIECES)
        return json_delivery(sse.chat_completion_json(model, text, usage, created=created), kinds, _success_headers())
    if "midstream-error" in kinds:
        chunks = sse.chat_stream_error_chunks(model, DEFAULT_TEXT_PIECES[:2], created=created)
    else:
        options = request.get("stream_options")
        options = options if isinstance(options, dict) else {}
        chunks = sse.chat_stream_chunks(
            model,
            DEFAULT_TEXT_PIECES,
            usage if options.get("include_usage") is True else None,
            created=created,
            usage_in_final_chunk="usage-in-final-chunk" in kinds,
            obfuscation=options.get("include_obfuscation") is not False,
        )
    return stream_delivery(chunks, kinds, _success_headers())


def _responses_reply(body: bytes, kinds: frozenset[str], reasoning_separate: bool) -> Reply:
    parsed = _parse(body)
    if isinstance(parsed, Reply):
        return parsed
    request, model = parsed
    usage = fake_responses_usage(body, request, reasoning_separate=reasoning_separate)
    created = int(time.time())
    rid = "resp_" + secrets.token_hex(24)
    if request.get("stream") is not True:
        text = "".join(DEFAULT_TEXT_PIECES)
        return json_delivery(sse.response_json(model, text, usage, response_id=rid, created_at=created), kinds)
    if "midstream-error" in kinds:
        events = sse.responses_error_events(model, DEFAULT_TEXT_PIECES[:2], response_id=rid, created_at=created)
    else:
        events = sse.responses_stream_events(model, DEFAULT_TEXT_PIECES, usage, response_id=rid, created_at=created)
    return stream_delivery(events, kinds, _success_headers())


def _embeddings_reply(body: bytes, kinds: frozenset[str]) -> Reply:
    parsed = _parse(body)
    if isinstance(parsed, Reply):
        return parsed
    request, model = parsed
    inputs = request.get("input")
    # A string or one token array is a single input; any other list is one input per element.
    if isinstance(inputs, list) and inputs and not all(isinstance(i, int) for i in inputs):
        texts = [repr(i) for i in inputs]
    else:
        texts = [repr(inputs)]
    dimensions = request.get("dimensions")
    size = dimensions if isinstance(dimensions, int) and dimensions > 0 else EMBEDDING_DIMENSIONS
    vectors = [sse.fake_embedding(t, size) for t in texts]
    encoding = "base64" if request.get("encoding_format") == "base64" else "float"
    out = sse.embeddings_json(model, vectors, max(1, len(body) // 4), encoding_format=encoding)
    return json_delivery(out, kinds, _success_headers())


def default_reply(
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    reasoning_separate: bool = False,
    models: Sequence[str] = sse.DEFAULT_MODELS,
    owned_by: str = "system",
    usage_details: bool = True,
) -> Reply:
    """Route a request the way an OpenAI-compatible API would, under any path prefix.

    `usage_details=False` leaves the `*_tokens_details` out of chat usage (Anthropic's layer)."""
    kinds = scenarios(headers.get("x-fake-scenario"))
    if kinds:
        fault = transport_fault(kinds)
        if fault is not None:
            return fault
        for kind in sorted(kinds):
            if kind in _ERROR_SCENARIOS:
                status, type, message, code, param = _ERROR_SCENARIOS[kind]
                return openai_error_reply(status, type, message, code, param=param)
    separate = reasoning_separate or "reasoning-separate" in kinds
    if method == "POST":
        if path.endswith("/chat/completions"):
            return _chat_reply(body, kinds, separate, usage_details)
        if path.endswith("/responses"):
            return _responses_reply(body, kinds, separate)
        if path.endswith("/embeddings"):
            return _embeddings_reply(body, kinds)
    elif method == "GET":
        if path.endswith("/models"):
            return json_delivery(sse.models_list_json(models, owned_by), kinds, _success_headers())
        _, found, model_id = path.rpartition("/models/")
        if found and model_id and "/" not in model_id:
            if model_id in models:
                return Reply(body=dumps(sse.model_object(model_id, owned_by)), headers=_success_headers())
            message = f"The model `{model_id}` does not exist or you do not have access to it."
            return openai_error_reply(404, "invalid_request_error", message, "model_not_found")
    return openai_error_reply(404, "invalid_request_error", f"Invalid URL ({method} {path})")
