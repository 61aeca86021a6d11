"""A fake Google Gemini upstream (native API and its OpenAI-compatible layer).

`FakeGoogle` is a `FakeUpstream` (see `fakes.fake_server`): a real HTTP server that
records every request byte for byte, credentials included exactly as received (the
`x-goog-api-key` header or the `?key=` query parameter), and plays queued `Reply`s first.
Standalone: `python -m fakes.fake_google --port 9003 [--workers N]`.

With nothing queued it answers like generativelanguage.googleapis.com, under the
API versions `v1` (google-genai 3.x's default), `v1beta` and `v1alpha`:

- `POST /{ver}/models/{model}:generateContent`: a JSON body is required (400 `INVALID_ARGUMENT`
  otherwise). The answer is a `GenerateContentResponse` echoing `{model}` as `modelVersion`,
  with deterministic `usageMetadata`: `promptTokenCount = max(1, len(body) // 4)`,
  `candidatesTokenCount = 5`, `thoughtsTokenCount = 3` only when the request has
  `generationConfig.thinkingConfig`, `cachedContentTokenCount = promptTokenCount // 2` only when
  it has a top-level `cachedContent`, `totalTokenCount` = prompt + candidates + thoughts.
- `POST /{ver}/models/{model}:streamGenerateContent?alt=sse`: one `data: JSON` event per text
  piece, separated by CRLF `\\r\\n\\r\\n`, no `[DONE]`; every chunk repeats the running
  `usageMetadata` (candidates grow, the rest are final from the start); the last has
  `finishReason: "STOP"` and the final counts.
- The same without `alt=sse`: the same objects as one JSON array written in pieces,
  `[{…}` `,\\r\\n{…}` … `]`, with content-type `application/json`.
- `POST /{ver}/models/{model}:countTokens`: `{"totalTokens": max(1, len(body) // 4), …}`.
- `POST /{ver}/models/{model}:embedContent`: `{"embedding": {"values": […]}}`, and
  `:batchEmbedContents`: `{"embeddings": [{"values": […]}, …]}`, one per request, 8 values each
  unless `outputDimensionality` says otherwise. No `usageMetadata` unless the `embed-usage`
  scenario asks for it.
- `GET /{ver}/models`, `GET /{ver}/models/{model}`: Gemini model shapes (404 for other ids).
- Any path containing `/openai/` (`/v1beta/openai/chat/completions`, `…/embeddings`,
  `…/models`): `FakeOpenAI`'s default behaviour and scenarios, with Gemini model ids. Its
  `GET …/openai/models` names them `models/<id>`, as Google's layer does.
- Anything else: 404 `NOT_FOUND` in Google's envelope.

No request-id header: Gemini sends none (its `responseId` is in the body).

The request header `x-fake-scenario` (comma-separated, combinable) changes the default answer:

- `slow`, `gzip`, `drop`, `reset`, `hang`: as on every fake (100 ms gaps, gzip with a sync flush
  per chunk, a cut halfway through the body, a reset before anything, no answer at all).
- `midstream-error`: a 200 stream that stops after two chunks with `{"error": {"code": 500, …,
  "status": "INTERNAL"}}` as its last SSE event or array element (google-genai raises on it).
- `lf`: `alt=sse` events separated by `\\n\\n` instead of CRLF.
- `embed-usage`: embeddings answers carry `usageMetadata` with `promptTokenCount` (and
  `totalTokenCount`) `= max(1, len(body) // 4)`.
- `pretty`: JSON pretty-printed with a 2-space indent, as Google's REST frontend can send it
  (SSE events then span several `data:` lines).
- `error-400` (INVALID_ARGUMENT), `error-403` (PERMISSION_DENIED), `error-404` (NOT_FOUND),
  `error-429` (RESOURCE_EXHAUSTED, with a `google.rpc.RetryInfo` detail), `error-500`
  (INTERNAL), `error-503` (UNAVAILABLE): `{"error": {"code", "message", "status"}}`, or its
  array form `[{"error": …}]` on the OpenAI layer, on `:streamGenerateContent` without
  `alt=sse`, and wherever `error-array` is also given.
- On `/openai/` paths, the OpenAI scenarios too (`usage-in-final-chunk`, `reasoning-separate`, …).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from fakes.fake_server import FakeUpstream, serve_main
from fakes.fake_wire import RecordedRequest
from fakes.google_replies import (
    DEFAULT_TEXT_PIECES,
    GOOGLE_JSON_TYPE,
    GOOGLE_SSE_TYPE,
    default_reply,
    fake_usage_metadata,
    google_error_reply,
)
from fakes.google_sse import (
    DEFAULT_MODELS,
    count_tokens_json,
    error_body,
    error_object,
    generate_content_json,
    generate_content_object,
    json_array_chunks,
    model_info,
    models_list_json,
    retry_info,
    running_usage,
    sse_events,
    stream_generate_content_array,
    stream_generate_content_events,
    stream_objects,
    usage_metadata,
)
from fakes.replies import Reply

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_TEXT_PIECES",
    "GOOGLE_JSON_TYPE",
    "GOOGLE_SSE_TYPE",
    "FakeGoogle",
    "RecordedRequest",
    "Reply",
    "count_tokens_json",
    "default_reply",
    "error_body",
    "error_object",
    "fake_usage_metadata",
    "generate_content_json",
    "generate_content_object",
    "google_error_reply",
    "json_array_chunks",
    "main",
    "model_info",
    "models_list_json",
    "retry_info",
    "running_usage",
    "sse_events",
    "stream_generate_content_array",
    "stream_generate_content_events",
    "stream_objects",
    "usage_metadata",
]


class FakeGoogle(FakeUpstream):
    """The fake Gemini upstream, served from a daemon thread with its own event loop."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, record: bool = True) -> None:
        super().__init__(default_reply, "google", host=host, port=port, record=record)


def main(argv: Sequence[str] | None = None) -> None:
    serve_main(
        functools.partial(FakeGoogle, record=False),
        name="google",
        prog="python -m fakes.fake_google",
        default_port=9003,
        argv=argv,
    )


if __name__ == "__main__":
    main()
