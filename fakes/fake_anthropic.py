"""A fake Anthropic upstream: a real HTTP server that records every request byte for byte.

Use it threaded in tests (`with FakeAnthropic() as fake: ... fake.url ...`) or standalone for
benchmarks and manual trials: `python -m fakes.fake_anthropic --port 9001 [--workers N]`.

Scripted replies: `fake.enqueue(Reply(...))` answers the next request (FIFO) with exactly that
status, headers, body or chunks, timing, gzip or connection fault. With nothing queued the fake
answers like api.anthropic.com:

- `POST /v1/messages` (any query string): JSON body required (400 otherwise; a body over 32 MB
  gets Cloudflare's HTML 413). `"stream": true` gives an SSE text stream, otherwise a JSON
  Message; `model` is echoed. Usage is deterministic: `input_tokens = max(1, len(body) // 4)`,
  `output_tokens = 5` (`1` in `message_start`). If the raw body contains `"cache_control"`,
  `cache_creation_input_tokens = max(1, len(body) // 8)`, split between 1h and 5m in proportion
  to how many of the `"cache_control"` occurrences are matched by a `"ttl":"1h"` (or
  `"ttl": "1h"`); `cache_read_input_tokens = 0`.
- `POST /v1/messages/count_tokens`: `{"input_tokens": max(1, len(body) // 4)}`.
- `GET /v1/models`: the fake's `models` (`FakeAnthropic(models=...)`, newest first) in pages, with
  Anthropic's cursor paging: `limit` (1 to 1000, default 20; 400 outside), `after_id` or
  `before_id` (400 for both), `has_more`, `first_id`, `last_id`.
- `GET /v1/models/{id}` (any `claude-*` id): Anthropic's model shape.
- `POST /v1/chat/completions` (Anthropic's OpenAI-SDK-compatible layer):
  `FakeOpenAI`'s chat behaviour and scenarios (errors in OpenAI's envelope), except that usage
  has no `*_tokens_details`, which this layer always leaves empty.
- Anything else: 404 with the `not_found_error` envelope.

The request header `x-fake-scenario` (comma-separated, combinable) changes the default answer:

- `tool_use`: a text block then a tool_use block (named after the request's first tool).
- `thinking`: a thinking block with a signature, then text.
- `refusal`: `stop_reason: "refusal"` with `stop_details` (streams only).
- `midstream-error`: a 200 stream that ends with `event: error` (overloaded_error), no message_stop.
- `cache-read`: report the cached amount above as `cache_read_input_tokens` instead of writes.
- `pad`: whitespace padding inside every event's JSON, as the real API does.
- `slow`: 100 ms between stream events (100 ms before the headers when not streaming).
- `ticks`: a text stream of 100 deltas (and its framing events), every event 50 ms after the last.
- `gzip`: gzip the response body (streams are gzipped per event with a sync flush).
- `drop`: close the connection halfway through the body, without the terminating chunk.
- `reset`: reset the connection before sending anything.
- `hang`: never answer (until the client gives up or the fake stops).
- `error-400`, `error-401`, `error-429`, `error-500`, `error-529`: that Anthropic error
  (429 with `retry-after: 1` and exhausted `anthropic-ratelimit-*`); `error-413`: Cloudflare's 413.
  Errors, `reset` and `hang` apply to every path.

Every response carries a fresh `request-id: req_…` unless the reply overrides it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from fakes import openai_replies
from fakes.anthropic_replies import (
    JSON_TYPE,
    SSE_TYPE,
    Reply,
    cloudflare_413_reply,
    default_reply,
    error_reply,
    fake_usage,
    ratelimit_headers,
)
from fakes.anthropic_sse import (
    DEFAULT_MODELS,
    PING_EVENT,
    count_tokens_json,
    delta_usage,
    error_body,
    message_json,
    midstream_error_events,
    model_info,
    models_page_json,
    new_id,
    rechunk,
    sse_event,
    text_stream_events,
    thinking_stream_events,
    tool_use_stream_events,
    usage_dict,
)
from fakes.fake_server import FakeUpstream, play, serve_main
from fakes.fake_wire import RecordedRequest

__all__ = [
    "DEFAULT_MODELS",
    "JSON_TYPE",
    "PING_EVENT",
    "SSE_TYPE",
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "cloudflare_413_reply",
    "count_tokens_json",
    "default_reply",
    "delta_usage",
    "error_body",
    "error_reply",
    "fake_usage",
    "main",
    "message_json",
    "midstream_error_events",
    "model_info",
    "models_page_json",
    "new_id",
    "play",
    "ratelimit_headers",
    "rechunk",
    "sse_event",
    "text_stream_events",
    "thinking_stream_events",
    "tool_use_stream_events",
    "usage_dict",
]


def _request_id() -> str:
    return new_id("req_")


class FakeAnthropic(FakeUpstream):
    """The fake Anthropic upstream, served from a daemon thread with its own event loop."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        models: Sequence[tuple[str, str]] = DEFAULT_MODELS,
    ) -> None:
        self.models = tuple(models)  # (id, display name), newest first
        super().__init__(
            self._route,
            "anthropic",
            host=host,
            port=port,
            record=record,
            request_id_header="request-id",
            new_request_id=_request_id,
        )

    def _route(self, method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes) -> Reply:
        if path == "/v1/chat/completions":
            return openai_replies.default_reply(method, path, query_string, headers, body, usage_details=False)
        # api.anthropic.com routes on the path; the query matters only to the model list's paging.
        return default_reply(method, path, body, headers.get("x-fake-scenario"), query_string, self.models)


def main(argv: Sequence[str] | None = None) -> None:
    serve_main(
        functools.partial(FakeAnthropic, record=False),
        name="anthropic",
        prog="python -m fakes.fake_anthropic",
        default_port=9001,
        argv=argv,
    )


if __name__ == "__main__":
    main()
