"""Wire facts of Anthropic's Messages API that buzz needs: where usage is, and nothing else.

Usage: a JSON body carries `usage`; a stream carries it in `message_start` and then in each
`message_delta`, whose usage is cumulative and replaces, never adds. The 5m/1h split of cache
writes comes only with `message_start` (or the body).
"""

from __future__ import annotations

import re

import msgspec

from buzz.billing.usage import Usage
from buzz.upstreams.base import MeterResult

PROVIDER = "anthropic"

# The JSON envelope of one content_block_delta event around its text: used to estimate output
# from what was relayed when a stream is cut before its final usage.
_DELTA_ENVELOPE_BYTES = 75
_BYTES_PER_TOKEN = 4
_ERROR_TYPE_RE = re.compile(r"[a-z_]{1,64}")


class _CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None


class _Error(msgspec.Struct):
    type: str | None = None


class _Message(msgspec.Struct):
    model: str | None = None
    usage: _Usage | None = None


class _Doc(msgspec.Struct):
    """An event's data, or a whole response body: the few fields the meter reads."""

    type: str | None = None
    model: str | None = None
    message: _Message | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_decode = msgspec.json.Decoder(_Doc).decode
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def safe_error_type(value: str | None) -> str | None:
    """An upstream error type is kept only if it is a plain identifier, never free text."""
    return value if value and _ERROR_TYPE_RE.fullmatch(value) else None


def estimate_tokens(size_bytes: int) -> int:
    """The documented approximation when nothing better is known: about 4 bytes a token."""
    return max(1, size_bytes // _BYTES_PER_TOKEN) if size_bytes else 0


class AnthropicUsage:
    """`UsageRules` for `/v1/messages`: JSON bodies and SSE streams."""

    def __init__(self, request_bytes: int, ceiling: int | None = None) -> None:
        self._request_bytes = request_bytes
        self._ceiling = ceiling  # max_tokens: what an estimate may reach at most
        self._usage: _Usage | None = None
        self._split: _CacheCreation | None = None
        self._model: str | None = None
        self._error_type: str | None = None
        self._stopped = False
        self._estimated_output = 0

    # --- stream ---------------------------------------------------------------------------

    def on_event(self, event: bytes | None, data: bytes) -> None:
        if event == b"content_block_delta":
            self._estimated_output += max(1, (len(data) - _DELTA_ENVELOPE_BYTES) // _BYTES_PER_TOKEN)
            return
        if event == b"message_stop":
            self._stopped = True
            return
        if event not in (b"message_start", b"message_delta", b"error", None):
            return
        doc = _decode(data)
        if doc.type == "message_start" and doc.message is not None:
            self._model = doc.message.model
            if doc.message.usage is not None:
                self._usage = doc.message.usage
                self._split = doc.message.usage.cache_creation
        elif doc.type == "message_delta" and doc.usage is not None:
            self._replace(doc.usage)
        elif doc.type == "error" and doc.error is not None:
            self._error_type = safe_error_type(doc.error.type)
        elif doc.type == "message_stop":
            self._stopped = True

    def _replace(self, update: _Usage) -> None:
        if self._usage is None:
            self._usage = _Usage()
        for name in _USAGE_FIELDS:
            value = getattr(update, name)
            if value is not None:
                setattr(self._usage, name, value)
        if update.cache_creation is not None:
            self._split = update.cache_creation

    # --- body -----------------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        if not body:
            return
        doc = _decode(body)
        if doc.type == "error" and doc.error is not None:
            self._error_type = safe_error_type(doc.error.type)
            return
        self._model = doc.model
        self._usage = doc.usage
        self._split = doc.usage.cache_creation if doc.usage is not None else None
        self._stopped = doc.usage is not None

    def on_skipped(self, size: int) -> None:
        self._estimated_output += estimate_tokens(size)

    # --- result ---------------------------------------------------------------------------

    def result(self, complete: bool) -> MeterResult:
        reported = complete and self._stopped
        if self._usage is None:
            if complete or self._error_type is not None:
                return MeterResult(None, "none", self._model, self._error_type)
            # Cut before any usage arrived: the prompt was sent, so bill its estimate.
            estimate = Usage(input_tokens=estimate_tokens(self._request_bytes), output_tokens=self._output_estimate())
            return MeterResult(estimate, "estimated", self._model, self._error_type)
        usage = self._to_usage(self._usage)
        if not reported:
            usage.output_tokens = max(usage.output_tokens, self._output_estimate())
        return MeterResult(usage, "reported" if reported else "estimated", self._model, self._error_type)

    def _output_estimate(self) -> int:
        # Bytes relayed can stand for more tokens than the vendor may bill: never more than the
        # request's own ceiling. What the vendor itself reported is kept as it is.
        return self._estimated_output if self._ceiling is None else min(self._estimated_output, self._ceiling)

    def _to_usage(self, raw: _Usage) -> Usage:
        writes = raw.cache_creation_input_tokens or 0
        one_hour = 0
        if self._split is not None:
            one_hour = min(self._split.ephemeral_1h_input_tokens or 0, writes)
        # Writes without a TTL split are 5-minute writes (the API's default TTL); a later
        # cumulative total larger than the split also counts its difference as 5m.
        return Usage(
            raw.input_tokens or 0,  # input_tokens
            raw.output_tokens or 0,  # output_tokens
            writes - one_hour,  # cache_write_5m_tokens
            one_hour,  # cache_write_1h_tokens
            raw.cache_read_input_tokens or 0,  # cache_read_tokens
        )


class _Result(msgspec.Struct):
    type: str | None = None
    message: _Message | None = None


class _ResultLine(msgspec.Struct):
    custom_id: str | None = None
    result: _Result | None = None


_decode_result_line = msgspec.json.Decoder(_ResultLine).decode


def batch_result(line: bytes) -> tuple[str, str, Usage] | None:
    """One line of a Message Batch's results: the custom_id, model and usage of a request that
    succeeded. None for a request that errored, was canceled or expired (the vendor bills none of
    them), and for a line that is not such a result."""
    try:
        doc = _decode_result_line(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    result = doc.result
    if doc.custom_id is None or result is None or result.type != "succeeded" or result.message is None:
        return None
    message = result.message
    if message.model is None or message.usage is None:
        return None
    raw = message.usage
    writes = raw.cache_creation_input_tokens or 0
    split = raw.cache_creation
    one_hour = min(split.ephemeral_1h_input_tokens or 0, writes) if split is not None else 0
    usage = Usage(
        raw.input_tokens or 0, raw.output_tokens or 0, writes - one_hour, one_hour, raw.cache_read_input_tokens or 0
    )
    return doc.custom_id, message.model, usage
