"""route: the request's model -> the upstream that serves it, with its URL and credential.

Only a copy of the body is read, and only for the few fields routing and billing need; the
bytes forwarded are the bytes received. The query goes on as sent, less any credential: buzz
forwards no key it did not put there itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar
from urllib.parse import quote, unquote_to_bytes

import msgspec

from buzz import providers
from buzz.catalogue import Catalogue
from buzz.config import Config, CredentialConfig
from buzz.errors import GatewayError, Kind
from buzz.identifiers import CHARSET, MAX_LENGTH, is_identifier
from buzz.proxy.auth import ANY_KEY, QUERY_KEY
from buzz.routes import Surface

_MAX_USER_ID = 256
_ABSENT = msgspec.Raw()


class _Head(msgspec.Struct):
    """What routing and billing read from a request body. Other fields are never decoded into
    objects (msgspec skips them while validating the JSON), and the objects read here stay raw
    bytes until asked for, then are decoded into flat types."""

    model: object = None
    stream: object = None
    user: object = None  # OpenAI's attribution field
    # The output ceiling, as each API names it (admission reserves it as the worst case).
    max_tokens: object = None
    max_completion_tokens: object = None
    max_output_tokens: object = None
    n: object = None  # OpenAI chat: answers generated, each up to the ceiling
    stream_options: msgspec.Raw = _ABSENT
    metadata: msgspec.Raw = _ABSENT
    generationConfig: msgspec.Raw = _ABSENT


class _Metadata(msgspec.Struct):
    user_id: str | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _GenerationConfig(msgspec.Struct):
    maxOutputTokens: int | None = None
    candidateCount: int | None = None  # answers generated, each up to maxOutputTokens


_decode_head = msgspec.json.Decoder(_Head).decode
_decode_metadata = msgspec.json.Decoder(_Metadata).decode
_decode_stream_options = msgspec.json.Decoder(_StreamOptions).decode
_decode_generation_config = msgspec.json.Decoder(_GenerationConfig).decode

_T = TypeVar("_T")


# Made on every request: a NamedTuple is immutable and costs a third of a frozen dataclass.
class RequestHead(NamedTuple):
    model: str | None
    stream: bool
    include_usage: bool  # stream_options.include_usage, OpenAI's switch for usage in a stream
    user_id: str | None
    max_output: int | None  # max_tokens / max_completion_tokens / max_output_tokens / maxOutputTokens
    choices: int  # n / candidateCount: how many answers, each up to max_output


# A request with no body to read (a model list): nothing to route by, and no output to reserve.
NO_HEAD = RequestHead(None, False, False, None, 0, 1)


class Route(NamedTuple):
    provider: str
    url: str
    # The header, with the upstream's key, that replaces the client's; None when the key went
    # into the query string instead (Gemini's `?key=`).
    credential: tuple[str, str] | None


def _nested(raw: msgspec.Raw, decode: Callable[[msgspec.Raw], _T]) -> _T | None:
    """An object field, decoded on demand; None when absent or not of the shape buzz reads."""
    if not raw:
        return None
    try:
        return decode(raw)
    except (msgspec.DecodeError, RecursionError):  # the vendor judges its own fields
        return None


def read_head(body: bytes, model_required: bool = True) -> RequestHead:
    """Read a copy of the body; Gemini's model is in the path, so its body need not name one."""
    try:
        head = _decode_head(body)
    except msgspec.ValidationError as exc:
        raise GatewayError(Kind.INVALID_REQUEST, "request body must be a JSON object") from exc
    except msgspec.DecodeError as exc:
        raise GatewayError(Kind.INVALID_REQUEST, "request body is not valid JSON") from exc
    except RecursionError as exc:
        raise GatewayError(Kind.INVALID_REQUEST, "request body is nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise GatewayError(Kind.INVALID_REQUEST, "request body is not valid UTF-8") from exc
    model = head.model
    if model_required and (not isinstance(model, str) or not model):
        raise GatewayError(Kind.INVALID_REQUEST, "model: field required (a model id string)")
    metadata = _nested(head.metadata, _decode_metadata)
    user = metadata.user_id if metadata is not None and metadata.user_id is not None else head.user
    options = _nested(head.stream_options, _decode_stream_options)
    config = _nested(head.generationConfig, _decode_generation_config)
    max_output = None
    for ceiling in (
        head.max_tokens,
        head.max_completion_tokens,
        head.max_output_tokens,
        config.maxOutputTokens if config is not None else None,
    ):
        if type(ceiling) is int and ceiling >= 0:  # `type`: True is an int, not a token count
            max_output = ceiling
            break
    choices = head.n if type(head.n) is int else config.candidateCount if config is not None else None
    return RequestHead(
        model if isinstance(model, str) else None,
        head.stream is True,
        options is not None and options.include_usage is True,
        user[:_MAX_USER_ID] if isinstance(user, str) and user else None,
        max_output,
        choices if type(choices) is int and choices > 1 else 1,
    )


def add_include_usage(body: bytes) -> bytes:
    """The body with `stream_options.include_usage` set: the one change buzz makes to a request,
    and only when the operator turned it on, so that streamed chat completions report usage.
    A body buzz cannot rebuild goes on unchanged."""
    try:
        document = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return body
    if not isinstance(document, dict):
        return body
    options = document.get("stream_options")
    document["stream_options"] = (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )
    return msgspec.json.encode(document)


def _parameter_name(part: bytes) -> bytes:
    return unquote_to_bytes(part.partition(b"=")[0].replace(b"+", b" "))


def clean_query(query: bytes, upstream_key: str | None = None) -> bytes:
    """The query as sent, less every `key` parameter and every parameter carrying a buzz key.

    With `upstream_key`, the first `key` parameter is kept in its place with the upstream's key
    as its value (Gemini's `?key=`, when that is where the client's key was). Every other byte
    stays as the client wrote it.
    """
    if b"key" not in query and b"%" not in query and b"buzz-" not in query:
        return query  # the common case: nothing that could be a credential
    kept = []
    for part in query.split(b"&"):
        if _parameter_name(part) == b"key":
            if upstream_key is not None:
                kept.append(b"key=" + quote(upstream_key, safe="").encode())
                upstream_key = None
            continue
        if ANY_KEY.search(unquote_to_bytes(part.replace(b"+", b" "))):
            continue
        kept.append(part)
    return b"&".join(kept)


class _Target(NamedTuple):
    """Where requests of one (surface, model, key place) go: the same for every such request."""

    provider: str
    prefix: str  # what goes between a credential's base URL and the request's path
    key_header: str | None  # the header the upstream key goes in; None: Gemini's `?key=`


class Destination(NamedTuple):
    """A request's vendor and path, before a credential of the vendor's pool is chosen."""

    target: _Target
    path: str  # as it goes upstream, after the vendor's prefix
    query: bytes

    @property
    def provider(self) -> str:
        return self.target.provider

    def to(self, credential: CredentialConfig) -> Route:
        """The request as it goes out with `credential`: its base URL, its key."""
        target, key = self.target, credential.api_key
        url = credential.base_url + target.prefix + self.path
        query = self.query
        if query:
            query = clean_query(query, key if target.key_header is None else None)
            if query:
                url += "?" + query.decode("latin-1")
        header = target.key_header
        if header is None:
            return Route(target.provider, url, None)
        return Route(target.provider, url, (header, f"Bearer {key}" if header == "authorization" else key))


# Targets kept per router. Model ids are client text, so the cache is bounded; when full it starts
# over, which costs one recomputation per id.
_TARGETS = 4096


class Router:
    """The model -> the upstream vendor and path, for the surface the client speaks.

    No surface translates: the Anthropic surface reaches Anthropic, the Gemini surface Google,
    and the OpenAI surface each vendor's own OpenAI-compatible endpoint, byte for byte. Which of
    the vendor's credentials carries the request is the pool's choice (`buzz.pools`).
    """

    def __init__(self, config: Config, catalogue: Catalogue) -> None:
        self._config = config
        self._catalogue = catalogue
        self._targets: dict[tuple[Surface, str, bytes | None, bool], _Target] = {}

    def routable(self, provider: str) -> bool:
        return bool(self._config.provider(provider).credentials)

    def provider(self, surface: Surface, model: str) -> str:
        if not is_identifier(model):
            raise GatewayError(
                Kind.INVALID_REQUEST, f"model: must be a model id: at most {MAX_LENGTH} characters, all {CHARSET}"
            )
        name = self._catalogue.provider_for(model)
        native = providers.NATIVE.get(surface.value)
        if name is None or (native is not None and name != native.name):
            where = "/v1/models" if surface is not Surface.GEMINI else "/v1/models (OpenAI shape)"
            raise GatewayError(
                Kind.NOT_FOUND,
                f"model {model!r} is not served by this gateway on this API; GET {where} lists the models it routes",
            )
        self._configured(name)
        return name

    def _configured(self, name: str) -> None:
        if not self.routable(name):
            vendor = providers.get(name).display_name
            raise GatewayError(Kind.NOT_FOUND, f"vendor {vendor} is not configured on this gateway")

    def route(
        self,
        surface: Surface,
        model: str,
        path: str,
        query: bytes,
        key_location: bytes | None,
        by_model: bool = True,
    ) -> Destination:
        """Where the request goes. `by_model` False: it names no model (a model list) and goes
        to the surface's own vendor."""
        if "buzz-" in path and ANY_KEY.search(path.encode("latin-1")):
            raise GatewayError(Kind.INVALID_REQUEST, "the path carries a buzz key; send it only as the API key")
        cached = (surface, model, key_location, by_model)
        target = self._targets.get(cached)
        if target is None:
            target = self._target(surface, model, key_location, by_model)  # refusals raise, and are not kept
            if len(self._targets) >= _TARGETS:
                self._targets.clear()
            self._targets[cached] = target
        # /v1/chat/completions -> <the vendor's OpenAI-compatible base>/chat/completions
        return Destination(target, path.removeprefix("/v1") if surface is Surface.OPENAI else path, query)

    def _target(self, surface: Surface, model: str, key_location: bytes | None, by_model: bool) -> _Target:
        if by_model:
            name = self.provider(surface, model)
        else:  # the surface's own vendor; the OpenAI surface's own routes (files, batches) are OpenAI's
            native = providers.NATIVE.get(surface.value)
            name = native.name if native is not None else "openai"
            self._configured(name)
        vendor = providers.get(name)
        if surface is Surface.OPENAI:
            return _Target(name, vendor.openai_prefix, "authorization")
        if key_location == QUERY_KEY and vendor.native_query_key:
            return _Target(name, "", None)
        client_place = key_location.decode("latin-1") if key_location is not None else ""
        header = client_place if client_place in vendor.native_key_headers else vendor.native_key_headers[0]
        return _Target(name, "", header)
