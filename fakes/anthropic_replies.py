"""What the fake Anthropic upstream answers: error replies and the default behaviour.

The default behaviour (used when no reply is queued) and its `x-fake-scenario` list are
documented in `fakes.fake_anthropic`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs

from fakes import anthropic_sse as sse
from fakes.replies import (
    JSON_TYPE,
    SLOW_EVENT_GAP,
    SSE_TYPE,
    TICKS,
    Reply,
    header_seconds,
    json_delivery,
    scenarios,
    stream_delivery,
    transport_fault,
)

__all__ = [
    "CLOUDFLARE_413_HTML",
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_TEXT_PIECES",
    "JSON_TYPE",
    "MAX_MESSAGES_BODY",
    "MAX_MODELS_LIMIT",
    "SLOW_EVENT_GAP",
    "SSE_TYPE",
    "Reply",
    "cloudflare_413_reply",
    "default_reply",
    "error_reply",
    "fake_usage",
    "not_found_reply",
    "ratelimit_headers",
]

# The largest page `GET /v1/models` serves (`limit`, 20 by default).
MAX_MODELS_LIMIT = 1000

# Anthropic's documented body limit for Messages; above it Cloudflare answers before Anthropic sees it.
MAX_MESSAGES_BODY = 32 * 1024 * 1024

DEFAULT_TEXT_PIECES = ("Hello", " from", " the", " fake", " upstream.")
DEFAULT_OUTPUT_TOKENS = 5

# Nginx's stock page, which Cloudflare serves for oversized bodies. The exact 413 is unverified;
# HTML is chosen because Cloudflare, not Anthropic, produces it.
CLOUDFLARE_413_HTML = (
    b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>413 Request Entity Too Large</h1></center>\r\n"
    b"<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)

_ERROR_SCENARIOS: MappingProxyType[str, tuple[int, str, str]] = MappingProxyType(
    {
        "error-400": (
            400,
            "invalid_request_error",
            'messages: roles must alternate between "user" and "assistant"',
        ),
        "error-401": (401, "authentication_error", "invalid x-api-key"),
        "error-429": (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        ),
        "error-500": (500, "api_error", "Internal server error"),
        "error-529": (529, "overloaded_error", "Overloaded"),
    }
)


def _rfc3339(seconds_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ratelimit_headers(retry_after: float) -> list[tuple[str, str]]:
    """`anthropic-ratelimit-*` headers of an exhausted request budget that resets after `retry_after`."""
    reset = _rfc3339(retry_after)
    limits = (
        ("requests", 50, 0),
        ("tokens", 96000, 0),
        ("input-tokens", 80000, 0),
        ("output-tokens", 16000, 0),
    )
    headers: list[tuple[str, str]] = []
    for kind, limit, remaining in limits:
        prefix = f"anthropic-ratelimit-{kind}-"
        headers += [
            (prefix + "limit", str(limit)),
            (prefix + "remaining", str(remaining)),
            (prefix + "reset", reset),
        ]
    return headers


def error_reply(
    status: int,
    type: str,
    message: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    retry_after: float | None = 1.0,
    should_retry: bool | None = None,
    error_code: str | None = None,
    request_id: str | None = None,
) -> Reply:
    """An Anthropic error with the headers the real API sends alongside.

    A 429 gets `retry-after` (omit with `retry_after=None`) and exhausted `anthropic-ratelimit-*`
    headers. `x-should-retry` is only sent when `should_retry` is given, since whether Anthropic
    sends it is unverified. `error_code` fills `error.details.error_code`. `headers` come last and
    override the rest.
    """
    rid = request_id or sse.new_id("req_")
    error: dict[str, Any] = {"type": type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    body = json.dumps({"type": "error", "error": error, "request_id": rid}, separators=(",", ":")).encode()
    out = [("content-type", JSON_TYPE), ("request-id", rid)]
    if status == 429:
        out += ratelimit_headers(retry_after or 60.0)
        if retry_after is not None:
            out.append(("retry-after", header_seconds(retry_after)))
    if should_retry is not None:
        out.append(("x-should-retry", "true" if should_retry else "false"))
    return Reply(status=status, headers=out + list(headers or ()), body=body)


def cloudflare_413_reply() -> Reply:
    """The 413 Cloudflare sends for a body over 32 MB: an HTML page without Anthropic headers."""
    headers = [("content-type", "text/html"), ("server", "cloudflare"), ("cf-ray", "972a33bb3977d246-FRA")]
    return Reply(status=413, headers=headers, body=CLOUDFLARE_413_HTML, add_request_id=False)


def not_found_reply() -> Reply:
    return error_reply(404, "not_found_error", "Not Found")


def fake_usage(body: bytes, *, cache_read: bool = False) -> dict[str, Any]:
    """Deterministic usage from the raw request body (see the module docs of fake_anthropic)."""
    breakpoints = body.count(b'"cache_control"')
    cached = max(1, len(body) // 8) if breakpoints else 0
    if cache_read:
        return sse.usage_dict(max(1, len(body) // 4), DEFAULT_OUTPUT_TOKENS, cache_read=cached)
    one_hour = min(breakpoints, body.count(b'"ttl":"1h"') + body.count(b'"ttl": "1h"'))
    write_1h = cached * one_hour // breakpoints if breakpoints else 0
    return sse.usage_dict(
        max(1, len(body) // 4),
        DEFAULT_OUTPUT_TOKENS,
        cache_write_5m=cached - write_1h,
        cache_write_1h=write_1h,
    )


def _first_tool_name(request: dict[str, Any]) -> str:
    tools = request.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        name = tools[0].get("name")
        if isinstance(name, str):
            return name
    return "get_weather"


def _stream_events(model: str, request: dict[str, Any], usage: dict[str, Any], kinds: frozenset[str]) -> list[bytes]:
    # Builders derive ids from their arguments; real message ids are unique per request.
    mid = sse.new_id("msg_")
    pad = "pad" in kinds
    start = {**usage, "output_tokens": 1}
    final = sse.delta_usage(usage)
    if "midstream-error" in kinds:
        return sse.midstream_error_events(model, DEFAULT_TEXT_PIECES[:2], start, pad=pad, message_id=mid)
    if "tool_use" in kinds:
        pieces = ['{"city"', ': "Par', 'is"}']
        name = _first_tool_name(request)
        return sse.tool_use_stream_events(
            model,
            "Let me check.",
            name,
            pieces,
            start,
            final,
            pad,
            tool_id=sse.new_id("toolu_"),
            message_id=mid,
        )
    if "thinking" in kinds:
        final["output_tokens_details"] = {"thinking_tokens": 2}
        return sse.thinking_stream_events(
            model, ["Simple", " question."], "c2lnbmF0dXJl", ["Hello."], start, final, pad, message_id=mid
        )
    if "refusal" in kinds:
        details = {"type": "refusal", "category": None, "explanation": None}
        return sse.text_stream_events(
            model, ["I can't"], start, final, pad, stop_reason="refusal", stop_details=details, message_id=mid
        )
    if "ticks" in kinds:
        return sse.text_stream_events(model, [" tick"] * TICKS, start, final, pad, message_id=mid)
    return sse.text_stream_events(model, DEFAULT_TEXT_PIECES, start, final, pad, message_id=mid)


def _message_body(model: str, request: dict[str, Any], usage: dict[str, Any], kinds: frozenset[str]) -> bytes:
    mid = sse.new_id("msg_")
    if "tool_use" in kinds:
        tool: dict[str, Any] = {
            "type": "tool_use",
            "id": sse.new_id("toolu_"),
            "name": _first_tool_name(request),
            "input": {"city": "Paris"},
            "caller": {"type": "direct"},
        }
        content: list[dict[str, Any]] = [{"type": "text", "text": "Let me check."}, tool]
        return sse.message_json(model, "", usage, content=content, stop_reason="tool_use", message_id=mid)
    if "thinking" in kinds:
        thinking: list[dict[str, Any]] = [
            {"type": "thinking", "thinking": "Simple question.", "signature": "c2lnbmF0dXJl"},
            {"type": "text", "text": "Hello."},
        ]
        return sse.message_json(model, "", usage, content=thinking, message_id=mid)
    return sse.message_json(model, "".join(DEFAULT_TEXT_PIECES), usage, message_id=mid)


def _messages_reply(body: bytes, kinds: frozenset[str]) -> Reply:
    if len(body) > MAX_MESSAGES_BODY:
        return cloudflare_413_reply()
    try:
        request = json.loads(body)
        model = request["model"]
        if not isinstance(model, str):
            raise TypeError(model)
    except (ValueError, KeyError, TypeError):
        return error_reply(400, "invalid_request_error", "model: Field required")
    usage = fake_usage(body, cache_read="cache-read" in kinds)
    if request.get("stream") is True:
        return stream_delivery(_stream_events(model, request, usage, kinds), kinds, [("cache-control", "no-cache")])
    return json_delivery(_message_body(model, request, usage, kinds), kinds)


def _models_reply(query_string: str, models: Sequence[tuple[str, str]]) -> Reply:
    query = parse_qs(query_string)
    try:
        limit = int(query.get("limit", ["20"])[0])
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_MODELS_LIMIT:
        return error_reply(400, "invalid_request_error", f"limit: Input should be between 1 and {MAX_MODELS_LIMIT}")
    after_id = query.get("after_id", [None])[0]
    before_id = query.get("before_id", [None])[0]
    if after_id is not None and before_id is not None:
        return error_reply(400, "invalid_request_error", "after_id and before_id cannot be used together")
    return Reply(body=sse.models_page_json(models, limit, after_id, before_id))


def default_reply(
    method: str,
    path: str,
    body: bytes,
    scenario: str | None,
    query_string: str = "",
    models: Sequence[tuple[str, str]] = sse.DEFAULT_MODELS,
) -> Reply:
    """Route a request the way api.anthropic.com would; `scenario` is the x-fake-scenario value."""
    kinds = scenarios(scenario)
    if kinds:
        fault = transport_fault(kinds)
        if fault is not None:
            return fault
        if "error-413" in kinds:
            return cloudflare_413_reply()
        for kind in kinds:
            if kind in _ERROR_SCENARIOS:
                return error_reply(*_ERROR_SCENARIOS[kind])
    if method == "POST":
        if path == "/v1/messages":
            return _messages_reply(body, kinds)
        if path == "/v1/messages/count_tokens":
            return Reply(body=sse.count_tokens_json(max(1, len(body) // 4)))
    elif method == "GET":
        if path == "/v1/models":
            return _models_reply(query_string, models)
        if path.startswith("/v1/models/"):
            model_id = path.removeprefix("/v1/models/")
            if model_id.startswith("claude-") and "/" not in model_id:
                names = dict(models)
                info = sse.model_info(model_id, names.get(model_id))
                return Reply(body=json.dumps(info, separators=(",", ":")).encode())
            return error_reply(404, "not_found_error", f"model: {model_id}")
    return not_found_reply()
