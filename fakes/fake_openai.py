"""Fake OpenAI-format upstreams (OpenAI, xAI, and the OpenAI layers of Anthropic and Gemini).

`FakeOpenAI` and `FakeXAI` are `FakeUpstream`s (see `fakes.fake_server`): real HTTP
servers that record every request byte for byte and play queued `Reply`s first. Standalone:
`python -m fakes.fake_openai --port 9002 [--workers N] [--xai]`.

With nothing queued they answer like api.openai.com, under ANY path prefix, so one
fake serves OpenAI and xAI (`/v1/...`), Anthropic's layer (`/v1/chat/completions`) and Gemini's
(`/v1beta/openai/chat/completions`):

- `POST …/chat/completions`: a JSON body with a string `model` is required (400 in OpenAI's
  envelope otherwise); `model` is echoed. Non-streaming: a `chat.completion`. With
  `"stream": true`: `data: {json}` chunks (no `event:` lines) ending in `data: [DONE]`; every
  chunk has `"usage": null`, and a final chunk with `"choices": []` carries usage only when the
  request has `stream_options.include_usage: true`. Chunks carry an `obfuscation` field
  unless `stream_options.include_obfuscation` is false, as OpenAI does.
- Usage is deterministic: `prompt_tokens = max(1, len(body) // 4)`, `completion_tokens = 5`,
  `prompt_tokens_details.cached_tokens = prompt_tokens // 2` when the request has a top-level
  `prompt_cache_key` (else 0), `completion_tokens_details.reasoning_tokens = 2` when the model
  starts with `o` or contains `reason` (else 0). OpenAI counts reasoning inside
  `completion_tokens`; with `reasoning_separate` (xAI) it is on top: `completion_tokens`
  stays 5 and `total_tokens` adds the reasoning tokens.
- `POST …/responses`: the Responses API with the same counts as `input_tokens`,
  `input_tokens_details.cached_tokens`, `output_tokens`, `output_tokens_details.reasoning_tokens`.
  Streams send `event: TYPE` + `data:` lines: `response.created` (usage null), the output item
  and content part events, one `response.output_text.delta` per piece, `response.completed`
  carrying `response.usage`; no `[DONE]`.
- `POST …/embeddings`: one 8-float vector per input (`dimensions` honoured), usage
  `{prompt_tokens, total_tokens}` = `max(1, len(body) // 4)`. `encoding_format: "base64"` (what
  the openai SDK sends unless told otherwise) gives base64 of little-endian float32.
- `GET …/models`: `{"object": "list", "data": [...]}`; `GET …/models/{id}`: one model, or a 404
  `model_not_found` for ids the fake does not list.
- Anything else: 404 `Invalid URL (METHOD PATH)`.

Successful answers carry `openai-version`, `openai-processing-ms` and `x-ratelimit-*`; every
answer a fresh `x-request-id: req_…` unless the reply overrides it.

The request header `x-fake-scenario` (comma-separated, combinable) changes the default answer:

- `slow`: 100 ms between stream events (100 ms before the headers when not streaming).
- `gzip`: gzip the response body (streams are gzipped per event with a sync flush).
- `drop`: close the connection halfway through the body, without the terminating chunk.
- `reset`: reset the connection before sending anything.
- `hang`: never answer (until the client gives up or the fake stops).
- `midstream-error`: a 200 stream that stops after two text pieces with `data: {"error": …}`
  (chat, no `[DONE]`) or an `event: error` (Responses, no `response.completed`).
- `reasoning-separate`: xAI's usage semantics (above) for this request.
- `usage-in-final-chunk`: with `include_usage`, usage rides in the finish chunk instead of a
  `"choices": []` chunk, as Gemini's OpenAI layer does for thinking models.
- `error-400` (context_length_exceeded), `error-401` (invalid_api_key), `error-404`
  (model_not_found), `error-429` (rate_limit_exceeded, with `retry-after: 1` and exhausted
  `x-ratelimit-*`), `error-500`, `error-503`: that error in OpenAI's envelope, on every path.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping, Sequence

from fakes.fake_server import FakeUpstream, serve_main
from fakes.fake_wire import RecordedRequest
from fakes.openai_replies import (
    DEFAULT_TEXT_PIECES,
    default_reply,
    fake_chat_usage,
    fake_responses_usage,
    go_duration,
    new_request_id,
    openai_error_reply,
    ratelimit_headers,
)
from fakes.openai_sse import (
    DEFAULT_MODELS,
    DONE,
    XAI_MODELS,
    chat_completion_json,
    chat_stream_chunks,
    chat_stream_error_chunks,
    chat_usage,
    data_event,
    embeddings_json,
    error_body,
    fake_embedding,
    model_object,
    models_list_json,
    response_json,
    response_object,
    responses_error_events,
    responses_stream_events,
    responses_usage,
    sse_event,
    stream_error_event,
)
from fakes.replies import Reply

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_TEXT_PIECES",
    "DONE",
    "XAI_MODELS",
    "FakeOpenAI",
    "FakeXAI",
    "RecordedRequest",
    "Reply",
    "chat_completion_json",
    "chat_stream_chunks",
    "chat_stream_error_chunks",
    "chat_usage",
    "data_event",
    "default_reply",
    "embeddings_json",
    "error_body",
    "fake_chat_usage",
    "fake_embedding",
    "fake_responses_usage",
    "go_duration",
    "main",
    "model_object",
    "models_list_json",
    "new_request_id",
    "openai_error_reply",
    "ratelimit_headers",
    "response_json",
    "response_object",
    "responses_error_events",
    "responses_stream_events",
    "responses_usage",
    "sse_event",
    "stream_error_event",
]


class FakeOpenAI(FakeUpstream):
    """The fake OpenAI upstream, served from a daemon thread with its own event loop.

    `reasoning_separate` reports reasoning tokens on top of `completion_tokens` (xAI's way);
    `models` and `owned_by` fill the models list.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        reasoning_separate: bool = False,
        models: Sequence[str] = DEFAULT_MODELS,
        owned_by: str = "system",
        name: str = "openai",
    ) -> None:
        self.reasoning_separate = reasoning_separate
        self.models = tuple(models)
        self.owned_by = owned_by
        super().__init__(
            self._route,
            name,
            host=host,
            port=port,
            record=record,
            request_id_header="x-request-id",
            new_request_id=new_request_id,
        )

    def _route(self, method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes) -> Reply:
        return default_reply(
            method,
            path,
            query_string,
            headers,
            body,
            reasoning_separate=self.reasoning_separate,
            models=self.models,
            owned_by=self.owned_by,
        )


class FakeXAI(FakeOpenAI):
    """The fake xAI upstream: OpenAI's format, with reasoning tokens outside `completion_tokens`
    and Grok models."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        reasoning_separate: bool = True,
        models: Sequence[str] = XAI_MODELS,
    ) -> None:
        super().__init__(
            host=host,
            port=port,
            record=record,
            reasoning_separate=reasoning_separate,
            models=models,
            owned_by="xai",
            name="xai",
        )


def main(argv: Sequence[str] | None = None) -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--xai", action="store_true", help="serve FakeXAI's behaviour instead")
    known, _ = pre.parse_known_args(argv)
    fake_type = FakeXAI if known.xai else FakeOpenAI
    serve_main(
        functools.partial(fake_type, record=False),
        name="xai" if known.xai else "openai",
        prog="python -m fakes.fake_openai",
        default_port=9004 if known.xai else 9002,
        argv=argv,
        parents=[pre],
    )


if __name__ == "__main__":
    main()
