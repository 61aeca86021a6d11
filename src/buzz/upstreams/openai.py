"""Wire facts of OpenAI-style APIs that buzz needs: where usage is, and nothing else.

Served by OpenAI and by the OpenAI-compatible layers of Anthropic, Gemini and xAI (`provider`
says which, as one of "openai", "anthropic", "google", "xai").

- Chat completions: a JSON body's `usage`, or in a stream the chunk whose `usage` is not null
  (OpenAI: a last chunk with `choices: []`, only when the client asked for
  `stream_options.include_usage`; Gemini: inside the final content chunk). Later replaces earlier.
  `prompt_tokens` includes cached tokens and cache writes, and buzz's input does not.
  xAI's `completion_tokens` leave out `reasoning_tokens` (genai-prices' reading of xAI),
  so for "xai" they are added; everyone else's include them already.
- Responses: `response.usage` of the `response.completed|incomplete|failed` event, or the
  body's `usage`. genai-prices' xAI `responses` extractor takes `output_tokens` as they
  are, so reasoning is not added there.
- Embeddings: the body's `usage.prompt_tokens`.

A stream that ends without usage, or is cut before it, is estimated: the prompt from the request,
the output from the text relayed in deltas (`buzz.upstreams.estimate`). So is an answer the meter
read only in part (over its cap), with what it skipped counted as output.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from buzz.billing.usage import Usage
from buzz.upstreams import estimate
from buzz.upstreams.base import MeterResult, UsageRules

_DONE = b"[DONE]"
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Responses delta events whose `delta` is output text (not audio or image bytes).
_TEXT_DELTAS = ("text.delta", "arguments.delta", "refusal.delta")


class _Error(msgspec.Struct):
    type: str | None = None
    code: str | int | None = None
    status: str | None = None  # Gemini's compatibility layer answers in Google's own shape


_ErrorField = _Error | str | None


def _error_type(error: _ErrorField) -> str | None:
    if isinstance(error, _Error):
        return estimate.error_type(error.type, error.code, error.status)
    return None


def _count(value: int | None) -> int:
    return value if value is not None and value > 0 else 0


# --- chat completions --------------------------------------------------------------------------


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _ChatUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Function(msgspec.Struct):
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # xAI, DeepSeek-style reasoning text
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None


class _ChatDoc(msgspec.Struct):
    """A stream chunk, or a whole response or error body: the few fields the meter reads."""

    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _ChatUsage | None = None
    error: _ErrorField = None


_decode_chat = msgspec.json.Decoder(_ChatDoc).decode
# Gemini's compatibility layer has sent its errors as a one-element array.
_decode_chat_body = msgspec.json.Decoder(_ChatDoc | list[_ChatDoc]).decode


def _delta_text(delta: _Delta) -> int:
    chars = sum(len(text) for text in (delta.content, delta.refusal, delta.reasoning_content, delta.reasoning) if text)
    for call in delta.tool_calls or ():
        if call.function is not None and call.function.arguments:
            chars += len(call.function.arguments)
    return chars


class _Rules:
    """What the three OpenAI-style rules share: the request for estimates, the output seen so far."""

    def __init__(self, request_body: bytes, model: str, provider: str, ceiling: int | None = None) -> None:
        self._request = request_body  # held, not copied: read again only if an estimate is needed
        self._requested_model = model
        self._provider = provider
        self._ceiling = ceiling  # the request's output ceiling times its answers, if it names one
        self._model: str | None = None
        self._error_type: str | None = None
        self._streamed = False
        self._chars = 0  # text relayed in deltas, for an output estimate
        self._pieces = 0
        self._partial = False  # the meter skipped part of the answer: a final usage is not final

    def _saw_output(self, chars: int) -> None:
        if chars:
            self._chars += chars
            self._pieces += 1

    def on_skipped(self, size: int) -> None:
        self._partial = True
        self._saw_output(size)

    def _output_estimate(self) -> int:
        # Never more than the vendor may bill; what the vendor reported is kept as it is.
        guess = estimate.output_tokens(self._chars, self._pieces)
        return guess if self._ceiling is None else min(guess, self._ceiling)

    def _input_estimate(self) -> int:
        return estimate.prompt_tokens(self._request, self._provider, self._requested_model)

    def _settle(self, usage: Usage | None, complete: bool) -> MeterResult:
        """Reported usage if the answer finished, else the best estimate of what was billed."""
        complete = complete and not self._partial
        if usage is not None:
            if complete:
                return MeterResult(usage, "reported", self._model, self._error_type)
            usage.output_tokens = max(usage.output_tokens, self._output_estimate())
            return MeterResult(usage, "estimated", self._model, self._error_type)
        if self._error_type is not None or (complete and not self._streamed):
            return MeterResult(None, "none", self._model, self._error_type)
        # A stream without usage, or an answer cut short: the prompt was sent, so bill its estimate.
        guess = Usage(input_tokens=self._input_estimate(), output_tokens=self._output_estimate())
        return MeterResult(guess, "estimated", self._model, self._error_type)


class ChatUsage(_Rules):
    """`UsageRules` for `/v1/chat/completions`: JSON bodies and `data:`-only SSE streams."""

    def __init__(self, request_body: bytes, model: str, provider: str, ceiling: int | None = None) -> None:
        super().__init__(request_body, model, provider, ceiling)
        self._usage: _ChatUsage | None = None
        self._done = False

    def on_event(self, event: bytes | None, data: bytes) -> None:
        self._streamed = True
        if data.strip() == _DONE:  # the terminator is not JSON
            self._done = True
            return
        try:
            doc = _decode_chat(data)
        except msgspec.DecodeError:
            return
        self._read(doc)
        for choice in doc.choices or ():
            if choice.delta is not None:
                self._saw_output(_delta_text(choice.delta))

    def on_body(self, body: bytes) -> None:
        if not body.strip():
            return
        try:
            decoded = _decode_chat_body(body)
        except msgspec.DecodeError:
            return
        for doc in decoded if isinstance(decoded, list) else (decoded,):
            self._read(doc)

    def _read(self, doc: _ChatDoc) -> None:
        if doc.model:
            self._model = doc.model
        if doc.usage is not None:
            self._usage = doc.usage
        if doc.error is not None:
            self._error_type = _error_type(doc.error) or self._error_type

    def result(self, complete: bool) -> MeterResult:
        usage = None if self._usage is None else self._to_usage(self._usage)
        return self._settle(usage, complete or self._done)

    def _to_usage(self, raw: _ChatUsage) -> Usage:
        details = raw.prompt_tokens_details or _PromptDetails()
        cached, writes = _count(details.cached_tokens), _count(details.cache_write_tokens)
        output = _count(raw.completion_tokens)
        if self._provider == "xai" and raw.completion_tokens_details is not None:
            output += _count(raw.completion_tokens_details.reasoning_tokens)
        return Usage(
            input_tokens=max(0, _count(raw.prompt_tokens) - cached - writes),
            output_tokens=output,
            cache_write_5m_tokens=writes,
            cache_read_tokens=cached,
        )


# --- responses ---------------------------------------------------------------------------------


class _InputDetails(msgspec.Struct):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _ResponsesUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _Response(msgspec.Struct):
    model: str | None = None
    usage: _ResponsesUsage | None = None
    error: _ErrorField = None


class _ResponsesDoc(msgspec.Struct):
    """A stream event (`type`, `response`, `delta`, or an error's `code`), or a whole body."""

    type: str | None = None
    response: _Response | None = None
    delta: str | None = None
    code: str | int | None = None
    model: str | None = None
    usage: _ResponsesUsage | None = None
    error: _ErrorField = None


_decode_responses = msgspec.json.Decoder(_ResponsesDoc).decode


class ResponsesUsage(_Rules):
    """`UsageRules` for `/v1/responses`: JSON bodies and typed SSE events (`event:` lines not needed)."""

    def __init__(self, request_body: bytes, model: str, provider: str, ceiling: int | None = None) -> None:
        super().__init__(request_body, model, provider, ceiling)
        self._usage: _ResponsesUsage | None = None
        self._finished = False

    def on_event(self, event: bytes | None, data: bytes) -> None:
        self._streamed = True
        if data.strip() == _DONE:  # not expected, but the SDK tolerates it
            return
        try:
            doc = _decode_responses(data)
        except msgspec.DecodeError:
            return
        kind = doc.type or ""
        if doc.delta and kind.endswith(_TEXT_DELTAS):
            self._saw_output(len(doc.delta))
            return
        if doc.response is not None:
            self._read(doc.response.model, doc.response.usage, doc.response.error)
        if kind in _TERMINAL:
            self._finished = True
        elif kind == "error":
            self._error_type = estimate.error_type(doc.code) or _error_type(doc.error) or self._error_type

    def on_body(self, body: bytes) -> None:
        if not body.strip():
            return
        try:
            doc = _decode_responses(body)
        except msgspec.DecodeError:
            return
        self._read(doc.model, doc.usage, doc.error)

    def _read(self, model: str | None, usage: _ResponsesUsage | None, error: _ErrorField) -> None:
        if model:
            self._model = model
        if usage is not None:
            self._usage = usage
        if error is not None:
            self._error_type = _error_type(error) or self._error_type

    def result(self, complete: bool) -> MeterResult:
        usage = None if self._usage is None else self._to_usage(self._usage)
        return self._settle(usage, complete or self._finished)

    @staticmethod
    def _to_usage(raw: _ResponsesUsage) -> Usage:
        details = raw.input_tokens_details or _InputDetails()
        cached, writes = _count(details.cached_tokens), _count(details.cache_write_tokens)
        return Usage(
            input_tokens=max(0, _count(raw.input_tokens) - cached - writes),
            output_tokens=_count(raw.output_tokens),  # includes reasoning, for xAI too
            cache_write_5m_tokens=writes,
            cache_read_tokens=cached,
        )


# --- embeddings --------------------------------------------------------------------------------


class _EmbeddingsUsage(msgspec.Struct):
    prompt_tokens: int | None = None


class _EmbeddingsDoc(msgspec.Struct):
    model: str | None = None
    usage: _EmbeddingsUsage | None = None
    error: _ErrorField = None


class _EmbeddingsRequest(msgspec.Struct):
    input: str | list[str | int | list[int]] | None = None  # text, or text already tokenized


_decode_embeddings = msgspec.json.Decoder(_EmbeddingsDoc).decode
_decode_embeddings_request = msgspec.json.Decoder(_EmbeddingsRequest).decode


class EmbeddingsUsage(_Rules):
    """`UsageRules` for `/v1/embeddings`: input tokens only, from the JSON body."""

    def __init__(self, request_body: bytes, model: str, provider: str, ceiling: int | None = None) -> None:
        super().__init__(request_body, model, provider, ceiling)
        self._input: int | None = None

    def on_event(self, event: bytes | None, data: bytes) -> None:
        return  # embeddings do not stream

    def on_skipped(self, size: int) -> None:
        self._partial = True  # vectors are not output tokens: only the input is billed

    def on_body(self, body: bytes) -> None:
        if not body.strip():
            return
        try:
            doc = _decode_embeddings(body)
        except msgspec.DecodeError:
            return
        if doc.model:
            self._model = doc.model
        if doc.usage is not None and doc.usage.prompt_tokens is not None:
            self._input = _count(doc.usage.prompt_tokens)
        if doc.error is not None:
            self._error_type = _error_type(doc.error)

    def result(self, complete: bool) -> MeterResult:
        usage = None if self._input is None else Usage(input_tokens=self._input)
        return self._settle(usage, complete)

    def _input_estimate(self) -> int:
        try:
            request = _decode_embeddings_request(self._request)
        except (msgspec.DecodeError, RecursionError):
            return super()._input_estimate()
        items = [request.input] if isinstance(request.input, str) else request.input or []
        tokens = 0
        for item in items:
            if isinstance(item, str):
                tokens += estimate.count_tokens(item, self._provider, self._requested_model)
            else:
                tokens += 1 if isinstance(item, int) else len(item)  # token ids count as themselves
        return tokens


# --- batch results -----------------------------------------------------------------------------


class _BatchResponse(msgspec.Struct):
    status_code: int | None = None
    body: msgspec.Raw = msgspec.Raw()


class _BatchLine(msgspec.Struct):
    custom_id: str | None = None
    response: _BatchResponse | None = None


class _BodyKind(msgspec.Struct):
    object: str | None = None
    model: str | None = None


_decode_batch_line = msgspec.json.Decoder(_BatchLine).decode
_decode_body_kind = msgspec.json.Decoder(_BodyKind).decode
# What a result's body is, by its `object`: the rules of the endpoint that answered it.
_BATCH_RULES: dict[str, Callable[[bytes, str, str], UsageRules]] = {
    "chat.completion": ChatUsage,
    "response": ResponsesUsage,
    "list": EmbeddingsUsage,
}


def batch_result(line: bytes) -> tuple[str, str, Usage] | None:
    """One line of an OpenAI batch's output file: the custom_id, model and usage of a request
    answered 200 with its usage. None for any other line (an error costs nothing)."""
    try:
        doc = _decode_batch_line(line)
        response = doc.response
        if doc.custom_id is None or response is None or response.status_code != 200:
            return None
        body = bytes(response.body)
        kind = _decode_body_kind(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    rules_type = _BATCH_RULES.get(kind.object or "")
    if rules_type is None or not kind.model:
        return None
    rules = rules_type(b"", kind.model, "openai")
    rules.on_body(body)
    result = rules.result(True)
    if result.usage is None or result.source != "reported":
        return None
    return doc.custom_id, kind.model, result.usage
