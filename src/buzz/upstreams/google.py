"""Wire facts of Gemini's native API that buzz needs: where usage is, and nothing else.

Usage: `usageMetadata` of a `generateContent` body, or of every chunk of a
`streamGenerateContent` stream, where the values are running totals: the last one seen replaces
the rest. A stream is SSE with `?alt=sse` (CRLF-separated `data:` lines, no `[DONE]`), and
without it one JSON array `[{...},{...}]` that the meter hands over whole, as a body.

`promptTokenCount` includes `cachedContentTokenCount`, and `thoughtsTokenCount` is separate from
`candidatesTokenCount`; tool results fed back (`toolUsePromptTokenCount`) are input. This is the
mapping genai-prices' `google` extractor uses.

Embeddings (`:embedContent`, `:batchEmbedContents`) are input only. Their answer may carry a
`usageMetadata.promptTokenCount`; without one, the input is estimated from the request's text.
"""

from __future__ import annotations

import msgspec

from buzz.billing.usage import Usage
from buzz.upstreams import estimate
from buzz.upstreams.base import MeterResult


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int | None = None
    cached_content_token_count: int | None = None
    candidates_token_count: int | None = None
    thoughts_token_count: int | None = None
    tool_use_prompt_token_count: int | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    function_call: msgspec.Raw | None = None  # its JSON length stands in for its text


class _Content(msgspec.Struct):
    parts: list[_Part] | None = None


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None


class _Error(msgspec.Struct):
    code: int | None = None
    status: str | None = None


class _Doc(msgspec.Struct, rename="camel"):
    """One chunk of a stream, or a whole body: the few fields the meter reads."""

    candidates: list[_Candidate] | None = None
    usage_metadata: _UsageMetadata | None = None
    model_version: str | None = None
    error: _Error | None = None


_decode_chunk = msgspec.json.Decoder(_Doc).decode
# A body is one response, or without `alt=sse` the whole stream as an array; errors come either way.
_decode_body = msgspec.json.Decoder(_Doc | list[_Doc]).decode


def _count(value: int | None) -> int:
    return value if value is not None and value > 0 else 0


class GeminiUsage:
    """`UsageRules` for `:generateContent` and `:streamGenerateContent` (SSE or JSON array)."""

    def __init__(self, request_body: bytes, model: str, provider: str = "google", ceiling: int | None = None) -> None:
        self._request = request_body  # held, not copied: read again only if an estimate is needed
        self._requested_model = model
        self._provider = provider
        self._ceiling = ceiling  # maxOutputTokens times candidateCount: what an estimate may reach
        self._usage: _UsageMetadata | None = None
        self._model: str | None = None
        self._error_type: str | None = None
        self._finished = False  # a candidate said why it stopped: the totals are final
        self._body = False
        self._chars = 0
        self._pieces = 0

    def on_event(self, event: bytes | None, data: bytes) -> None:
        try:
            doc = _decode_chunk(data)
        except msgspec.DecodeError:
            return
        self._read(doc)

    def on_body(self, body: bytes) -> None:
        if not body.strip():
            return
        try:
            decoded = _decode_body(body)
        except msgspec.DecodeError:
            return
        self._body = True
        for doc in decoded if isinstance(decoded, list) else (decoded,):
            self._read(doc)

    def on_skipped(self, size: int) -> None:
        self._chars += size
        self._pieces += 1

    def _read(self, doc: _Doc) -> None:
        if doc.usage_metadata is not None:
            self._usage = doc.usage_metadata
        if doc.model_version:
            self._model = doc.model_version
        if doc.error is not None:
            self._error_type = estimate.error_type(doc.error.status) or self._error_type
        chars = 0
        for candidate in doc.candidates or ():
            if candidate.finish_reason:
                self._finished = True
            parts = candidate.content.parts if candidate.content is not None else None
            for part in parts or ():
                chars += len(part.text or "") + (len(part.function_call) if part.function_call is not None else 0)
        if chars:
            self._chars += chars
            self._pieces += 1

    def result(self, complete: bool) -> MeterResult:
        output_estimate = estimate.output_tokens(self._chars, self._pieces)
        if self._ceiling is not None:
            output_estimate = min(output_estimate, self._ceiling)
        if self._usage is None:
            if complete or self._error_type is not None:
                return MeterResult(None, "none", self._model, self._error_type)
            # Cut before any usage arrived: the prompt was sent, so bill its estimate.
            prompt = estimate.prompt_tokens(self._request, self._provider, self._requested_model)
            return MeterResult(Usage(input_tokens=prompt, output_tokens=output_estimate), "estimated", self._model)
        usage = self._to_usage(self._usage)
        # A whole body is final; a stream is final once a candidate carried its finishReason.
        if complete and (self._body or self._finished):
            return MeterResult(usage, "reported", self._model, self._error_type)
        usage.output_tokens = max(usage.output_tokens, output_estimate)
        return MeterResult(usage, "estimated", self._model, self._error_type)

    @staticmethod
    def _to_usage(raw: _UsageMetadata) -> Usage:
        cached = _count(raw.cached_content_token_count)
        prompt = _count(raw.prompt_token_count)
        return Usage(
            input_tokens=max(0, prompt - cached) + _count(raw.tool_use_prompt_token_count),
            output_tokens=_count(raw.candidates_token_count) + _count(raw.thoughts_token_count),
            cache_read_tokens=cached,
        )


class _EmbedAnswer(msgspec.Struct, rename="camel"):
    usage_metadata: _UsageMetadata | None = None
    error: _Error | None = None


class _TextPart(msgspec.Struct):
    text: str | None = None


class _TextContent(msgspec.Struct):
    parts: list[_TextPart] | None = None


class _EmbedItem(msgspec.Struct):
    content: _TextContent | None = None


class _EmbedRequest(msgspec.Struct):
    """`:embedContent` has one `content`; `:batchEmbedContents` a list of `requests`, each with one."""

    content: _TextContent | None = None
    requests: list[_EmbedItem] | None = None


_decode_embed_answer = msgspec.json.Decoder(_EmbedAnswer).decode
_decode_embed_request = msgspec.json.Decoder(_EmbedRequest).decode


class GeminiEmbedUsage:
    """`UsageRules` for `:embedContent` and `:batchEmbedContents`: input tokens only."""

    def __init__(self, request_body: bytes, model: str, provider: str = "google") -> None:
        self._request = request_body
        self._model = model
        self._provider = provider
        self._input: int | None = None
        self._error_type: str | None = None

    def on_event(self, event: bytes | None, data: bytes) -> None:
        return  # embeddings do not stream

    def on_skipped(self, size: int) -> None:
        return  # vectors are not output tokens: the input is estimated from the request

    def on_body(self, body: bytes) -> None:
        try:
            answer = _decode_embed_answer(body)
        except (msgspec.DecodeError, RecursionError):
            return
        usage = answer.usage_metadata
        if usage is not None and usage.prompt_token_count is not None:
            self._input = _count(usage.prompt_token_count)
        if answer.error is not None:
            self._error_type = estimate.error_type(answer.error.status)

    def result(self, complete: bool) -> MeterResult:
        if self._input is not None:
            return MeterResult(Usage(input_tokens=self._input), "reported", None, self._error_type)
        if self._error_type is not None:
            return MeterResult(None, "none", None, self._error_type)
        return MeterResult(Usage(input_tokens=self._estimate()), "estimated")

    def _estimate(self) -> int:
        try:
            request = _decode_embed_request(self._request)
        except (msgspec.DecodeError, RecursionError):
            return estimate.approximate_tokens(len(self._request))
        contents = [request.content] if request.content is not None else []
        contents += [item.content for item in request.requests or () if item.content is not None]
        texts = [part.text for content in contents for part in content.parts or () if part.text]
        return sum(estimate.count_tokens(text, self._provider, self._model) for text in texts)
