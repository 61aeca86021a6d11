"""route: the request's model -> the upstream that serves it, with its URL and credential.

Only a copy of the body is read, and only for `model`, `stream` and `metadata.user_id`; the
bytes forwarded are the bytes received.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote

import msgspec

from buzz.catalogue import Catalogue
from buzz.config import Config
from buzz.errors import GatewayError, Kind
from buzz.proxy.auth import QUERY_KEY
from buzz.routes import Surface

_MAX_USER_ID = 256
_MAX_MODEL_ID = 256


class _Head(msgspec.Struct):
    """What routing and billing read from a request body. Other fields are never decoded into
    objects (msgspec skips them while validating the JSON)."""

    model: object = None
    stream: object = None
    stream_options: object = None
    metadata: object = None
    user: object = None  # OpenAI's attribution field
    # The output ceiling, as each API names it (admission reserves it as the worst case).
    max_tokens: object = None
    max_completion_tokens: object = None
    max_output_tokens: object = None
    generationConfig: object = None
    n: object = None  # OpenAI chat: answers generated, each up to the ceiling


_decode_head = msgspec.json.Decoder(_Head).decode


# Made on every request: a NamedTuple is immutable and costs a third of a frozen dataclass.
class RequestHead(NamedTuple):
    model: str | None
    stream: bool
    include_usage: bool  # stream_options.include_usage, OpenAI's switch for usage in a stream
    user_id: str | None
    max_output: int | None  # max_tokens / max_completion_tokens / max_output_tokens / maxOutputTokens
    choices: int  # n / candidateCount: how many answers, each up to max_output


class Route(NamedTuple):
    provider: str
    url: str
    # The header, with the upstream's key, that replaces the client's; None when the key went
    # into the query string instead (Gemini's `?key=`).
    credential: tuple[str, str] | None


def read_head(body: bytes, model_required: bool = True) -> RequestHead:
    """Read a copy of the body; Gemini's model is in the path, so its body need not name one."""
    try:
        head = _decode_head(body)
    except msgspec.ValidationError as exc:
        raise GatewayError(Kind.INVALID_REQUEST, "request body must be a JSON object") from exc
    except msgspec.DecodeError as exc:
        raise GatewayError(Kind.INVALID_REQUEST, "request body is not valid JSON") from exc
    model = head.model
    if model_required and (not isinstance(model, str) or not model):
        raise GatewayError(Kind.INVALID_REQUEST, "model: field required (a model id string)")
    if isinstance(model, str) and len(model) > _MAX_MODEL_ID:
        raise GatewayError(Kind.INVALID_REQUEST, f"model: longer than {_MAX_MODEL_ID} characters")
    user = head.metadata.get("user_id") if isinstance(head.metadata, dict) else head.user
    options = head.stream_options
    config = head.generationConfig
    max_output = None
    for ceiling in (
        head.max_tokens,
        head.max_completion_tokens,
        head.max_output_tokens,
        config.get("maxOutputTokens") if isinstance(config, dict) else None,
    ):
        if type(ceiling) is int and ceiling >= 0:  # `type`: True is an int, not a token count
            max_output = ceiling
            break
    choices = head.n if type(head.n) is int else config.get("candidateCount") if isinstance(config, dict) else None
    return RequestHead(
        model if isinstance(model, str) else None,
        head.stream is True,
        isinstance(options, dict) and options.get("include_usage") is True,
        user[:_MAX_USER_ID] if isinstance(user, str) and user else None,
        max_output,
        choices if type(choices) is int and choices > 1 else 1,
    )


def add_include_usage(body: bytes) -> bytes:
    """The body with `stream_options.include_usage` set: the one change buzz makes to a request,
    and only when the operator turned it on, so that streamed chat completions report usage."""
    document = msgspec.json.decode(body)
    options = document.get("stream_options")
    document["stream_options"] = (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )
    return msgspec.json.encode(document)


def _replace_query_key(query: bytes, key: str) -> bytes:
    """The query with the `key` parameter's value replaced, every other byte as it was."""
    return b"&".join(
        b"key=" + quote(key, safe="").encode() if part.startswith(b"key=") else part for part in query.split(b"&")
    )


class Router:
    """The model -> the upstream URL and credential, for the surface the client speaks.

    No surface translates: the Anthropic surface reaches Anthropic, the Gemini surface Google,
    and the OpenAI surface each vendor's own OpenAI-compatible endpoint, byte for byte.
    """

    def __init__(self, config: Config, catalogue: Catalogue) -> None:
        self._config = config
        self._catalogue = catalogue

    def routable(self, provider: str) -> bool:
        return self._config.provider(provider).api_key is not None

    def provider(self, surface: Surface, model: str) -> str:
        provider = self._catalogue.provider_for(model)
        native = _NATIVE.get(surface)
        if provider is None or not self.routable(provider) or (native is not None and provider != native):
            where = "/v1/models" if surface is not Surface.GEMINI else "/v1/models (OpenAI shape)"
            raise GatewayError(
                Kind.NOT_FOUND,
                f"model {model!r} is not served by this gateway on this API; GET {where} lists the models it routes",
            )
        return provider

    def route(self, surface: Surface, model: str, path: str, query: bytes, key_location: bytes | None) -> Route:
        provider = self.provider(surface, model)
        upstream = self._config.provider(provider)
        api_key = upstream.api_key
        assert api_key is not None  # provider() checked it
        credential: tuple[str, str] | None
        if surface is Surface.OPENAI:
            # /v1/chat/completions -> <the vendor's OpenAI-compatible base>/chat/completions
            url = upstream.base_url + _OPENAI_COMPAT_PREFIX[provider] + path.removeprefix("/v1")
            credential = ("authorization", f"Bearer {api_key}")
        else:
            url = upstream.base_url + path
            if key_location == QUERY_KEY:
                query, credential = _replace_query_key(query, api_key), None
            elif key_location == b"authorization":
                credential = ("authorization", f"Bearer {api_key}")
            elif surface is Surface.GEMINI:
                credential = ("x-goog-api-key", api_key)
            else:
                credential = ("x-api-key", api_key)
        if query:
            url += "?" + query.decode("latin-1")
        return Route(provider=provider, url=url, credential=credential)


# Where each vendor serves the OpenAI wire format, under its configured base URL.
_OPENAI_COMPAT_PREFIX = {"openai": "", "xai": "", "anthropic": "/v1", "google": "/v1beta/openai"}
# Surfaces that speak one vendor's own format reach only that vendor.
_NATIVE = {Surface.ANTHROPIC: "anthropic", Surface.GEMINI: "google"}
