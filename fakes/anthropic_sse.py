"""Exact bytes of Anthropic Messages responses, for fake upstreams.

Pure functions: the same arguments give the same bytes, so a test can build a reply twice and
compare (ids left to default are hashes of the arguments; padding widths are hashes of the event).
Stream builders return one `bytes` per SSE event so a fake can send each event as its own chunk,
the way the real API does. JSON is compact UTF-8 (non-ASCII stays raw, so multi-byte characters
really occur on the wire); `pad=True` adds the whitespace, of varying width, that real Anthropic
puts before an event's closing brace, which catches meters that match bytes instead of parsing JSON.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

JsonObject = Mapping[str, Any]

# The three ids the SDK model literal lists first; enough for Claude Code's model discovery.
DEFAULT_MODELS: tuple[tuple[str, str], ...] = (
    ("claude-opus-4-8", "Claude Opus 4.8"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
)

# Not built with _dumps: the real ping has a space after the colon.
PING_EVENT = b'event: ping\ndata: {"type": "ping"}\n\n'

_ID_ALPHABET = string.ascii_letters + string.digits
# Reused because json.dumps with options builds a new encoder per call, a third of a stream's cost.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def new_id(prefix: str) -> str:
    """An id shaped like Anthropic's (`msg_011C…`, `req_011C…`, `toolu_011C…`)."""
    return prefix + "011C" + "".join(random.choices(_ID_ALPHABET, k=20))


def stable_id(prefix: str, *parts: object) -> str:
    """An id shaped like `new_id`'s, derived from `parts` instead of chance."""
    n = int.from_bytes(hashlib.sha256(repr(parts).encode()).digest())
    chars = []
    for _ in range(20):
        n, r = divmod(n, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[r])
    return prefix + "011C" + "".join(chars)


def _dumps(obj: object) -> bytes:
    return _ENCODER.encode(obj).encode()


def _pad(payload: bytes) -> bytes:
    width = 1 + zlib.crc32(payload) % 16
    return payload[:-1] + b" " * width + b"}"


def sse_event(name: str, data: JsonObject | bytes, *, pad: bool = False) -> bytes:
    """`event: NAME\\ndata: JSON\\n\\n`; bytes data is used verbatim (then padded if asked)."""
    payload = data if isinstance(data, bytes) else _dumps(data)
    if pad:
        payload = _pad(payload)
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def usage_dict(
    input_tokens: int,
    output_tokens: int,
    *,
    cache_write_5m: int = 0,
    cache_write_1h: int = 0,
    cache_read: int = 0,
) -> dict[str, Any]:
    """Usage in the 2026 shape of `message_start` and non-streaming Messages, TTL split included."""
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write_5m + cache_write_1h,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_write_5m,
            "ephemeral_1h_input_tokens": cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
        "inference_geo": "global",
    }


def delta_usage(usage: JsonObject) -> dict[str, Any]:
    """The cumulative counters a final `message_delta` carries: no TTL split, tier or geo."""
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    return {k: usage[k] for k in keys if k in usage}


def _message(model: str, message_id: str, content: list[Any], usage: JsonObject) -> dict[str, Any]:
    return {
        "model": model,
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "usage": dict(usage),
    }


def _start(model: str, usage_start: JsonObject, message_id: str) -> dict[str, Any]:
    return {"type": "message_start", "message": _message(model, message_id, [], usage_start)}


def _block_start(index: int, block: JsonObject) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": dict(block)}


def _delta(index: int, delta: JsonObject) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": dict(delta)}


def _block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def _end(usage_final: JsonObject, stop_reason: str, stop_details: JsonObject | None) -> list[dict[str, Any]]:
    delta = {"stop_reason": stop_reason, "stop_sequence": None, "stop_details": stop_details}
    return [
        {"type": "message_delta", "delta": delta, "usage": dict(usage_final)},
        {"type": "message_stop"},
    ]


def _encode(events: Sequence[JsonObject | bytes], pad: bool) -> list[bytes]:
    return [e if isinstance(e, bytes) else sse_event(e["type"], e, pad=pad) for e in events]


def _text_block(index: int, pieces: Sequence[str]) -> list[JsonObject | bytes]:
    return [
        _block_start(index, {"type": "text", "text": ""}),
        *(_delta(index, {"type": "text_delta", "text": p}) for p in pieces),
        _block_stop(index),
    ]


def text_stream_events(
    model: str,
    text_pieces: Sequence[str],
    usage_start: JsonObject,
    usage_final: JsonObject,
    pad: bool = False,
    *,
    message_id: str | None = None,
    stop_reason: str = "end_turn",
    stop_details: JsonObject | None = None,
) -> list[bytes]:
    """A text answer; `usage_final` is cumulative, as in `message_delta`."""
    block = _text_block(0, text_pieces)
    mid = message_id or stable_id("msg_", model, tuple(text_pieces), stop_reason)
    events: list[JsonObject | bytes] = [
        _start(model, usage_start, mid),
        block[0],
        PING_EVENT,
        *block[1:],
        *_end(usage_final, stop_reason, stop_details),
    ]
    return _encode(events, pad)


def tool_use_stream_events(
    model: str,
    text: str,
    tool_name: str,
    input_json_pieces: Sequence[str],
    usage_start: JsonObject,
    usage_final: JsonObject,
    pad: bool = False,
    *,
    tool_id: str | None = None,
    message_id: str | None = None,
) -> list[bytes]:
    """A text block, then a tool_use block streamed as `input_json_delta` pieces (example B).

    The first piece on the wire is always `""`, as the real API sends it.
    """
    pieces = list(input_json_pieces)
    if not pieces or pieces[0] != "":
        pieces.insert(0, "")
    tool_block = {
        "type": "tool_use",
        "id": tool_id or stable_id("toolu_", model, tool_name, tuple(pieces)),
        "name": tool_name,
        "caller": {"type": "direct"},
        "input": {},
    }
    text_block = _text_block(0, [text])
    mid = message_id or stable_id("msg_", model, text, tool_name, tuple(pieces))
    events: list[JsonObject | bytes] = [
        _start(model, usage_start, mid),
        text_block[0],
        PING_EVENT,
        *text_block[1:],
        _block_start(1, tool_block),
        *(_delta(1, {"type": "input_json_delta", "partial_json": p}) for p in pieces),
        _block_stop(1),
        *_end(usage_final, "tool_use", None),
    ]
    return _encode(events, pad)


def thinking_stream_events(
    model: str,
    thinking_pieces: Sequence[str],
    signature: str,
    text_pieces: Sequence[str],
    usage_start: JsonObject,
    usage_final: JsonObject,
    pad: bool = False,
    *,
    message_id: str | None = None,
) -> list[bytes]:
    """A thinking block (deltas, then `signature_delta` just before its stop), then text (example C)."""
    mid = message_id or stable_id("msg_", model, tuple(thinking_pieces), signature, tuple(text_pieces))
    events: list[JsonObject | bytes] = [
        _start(model, usage_start, mid),
        _block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        PING_EVENT,
        *(_delta(0, {"type": "thinking_delta", "thinking": p}) for p in thinking_pieces),
        _delta(0, {"type": "signature_delta", "signature": signature}),
        _block_stop(0),
        *_text_block(1, text_pieces),
        *_end(usage_final, "end_turn", None),
    ]
    return _encode(events, pad)


def midstream_error_events(
    model: str,
    text_pieces: Sequence[str],
    usage_start: JsonObject,
    *,
    error_type: str = "overloaded_error",
    message: str = "Overloaded",
    pad: bool = False,
    message_id: str | None = None,
) -> list[bytes]:
    """A stream that starts well and ends with `event: error` instead of `message_stop` (example D)."""
    block = _text_block(0, text_pieces)
    # The documented error event uses json.dumps' default spacing; keep it byte-identical.
    error = json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()
    mid = message_id or stable_id("msg_", model, tuple(text_pieces), error_type)
    events: list[JsonObject | bytes] = [
        _start(model, usage_start, mid),
        block[0],
        PING_EVENT,
        *block[1:-1],
        sse_event("error", error),
    ]
    return _encode(events, pad)


def message_json(
    model: str,
    text: str,
    usage: JsonObject,
    *,
    content: Sequence[JsonObject] | None = None,
    stop_reason: str = "end_turn",
    stop_details: JsonObject | None = None,
    message_id: str | None = None,
) -> bytes:
    """A non-streaming Message; `content` replaces the single text block if given."""
    blocks = [dict(b) for b in content] if content is not None else [{"type": "text", "text": text}]
    message = _message(model, message_id or stable_id("msg_", model, repr(blocks)), blocks, usage)
    message["stop_reason"] = stop_reason
    message["stop_details"] = stop_details
    return _dumps(message)


def error_body(type: str, message: str, request_id: str) -> bytes:
    """Anthropic's error envelope for every non-2xx status."""
    return _dumps({"type": "error", "error": {"type": type, "message": message}, "request_id": request_id})


def count_tokens_json(input_tokens: int) -> bytes:
    return _dumps({"input_tokens": input_tokens})


def model_info(model_id: str, display_name: str | None = None) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name or model_id,
        "created_at": "2026-05-28T00:00:00Z",
    }


def models_page_json(
    models: Sequence[tuple[str, str]] = DEFAULT_MODELS,
    limit: int | None = None,
    after_id: str | None = None,
    before_id: str | None = None,
) -> bytes:
    """One page of `GET /v1/models`, newest first as `models` are given, with Anthropic's cursor
    paging: `limit` entries (all when None) after `after_id` or just before `before_id`."""
    ids = [mid for mid, _ in models]
    start, end = 0, len(models)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else end
    elif before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
    if limit is not None:
        if before_id is not None and after_id is None:
            start = max(start, end - limit)
        else:
            end = min(end, start + limit)
    data = [model_info(mid, name) for mid, name in models[start:end]]
    more = start > 0 if before_id is not None and after_id is None else end < len(models)
    return _dumps(
        {
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def rechunk(events: Sequence[bytes], size: int) -> list[bytes]:
    """The same bytes cut every `size` bytes, ignoring event and UTF-8 character boundaries."""
    data = b"".join(events)
    return [data[i : i + size] for i in range(0, len(data), size)]
