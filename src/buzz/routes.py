"""The routes buzz answers, as one table. Everything else is a `gateway_not_found_error`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Surface(Enum):
    """The API dialect a client speaks: it decides the error envelope and the key's places."""

    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    GEMINI = "gemini"


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    surface: Surface
    proxied: bool = True
    billed: bool = True  # count_tokens and model lists are forwarded but cost nothing
    # False: the request names no model to route by (a model list, one model's details). It goes
    # to its surface's own vendor, and its body is not read.
    by_model: bool = True
    # True: any other route of the vendor's (files, batches, images...). Its body streams upstream
    # as it arrives, never held whole, under a size limit of its own.
    streamed: bool = False


MESSAGES = Endpoint("messages", Surface.ANTHROPIC)
COUNT_TOKENS = Endpoint("count_tokens", Surface.ANTHROPIC, billed=False)
ANTHROPIC_MODELS = Endpoint("models", Surface.ANTHROPIC, billed=False, by_model=False)
ANTHROPIC_MODEL = Endpoint("model", Surface.ANTHROPIC, billed=False, by_model=False)
CHAT = Endpoint("chat", Surface.OPENAI)
RESPONSES = Endpoint("responses", Surface.OPENAI)
EMBEDDINGS = Endpoint("embeddings", Surface.OPENAI)
GENERATE = Endpoint("generate", Surface.GEMINI)
STREAM_GENERATE = Endpoint("stream_generate", Surface.GEMINI)
GEMINI_COUNT_TOKENS = Endpoint("gemini_count_tokens", Surface.GEMINI, billed=False)
EMBED_CONTENT = Endpoint("embed_content", Surface.GEMINI)
BATCH_EMBED_CONTENTS = Endpoint("batch_embed_contents", Surface.GEMINI)
GEMINI_MODELS = Endpoint("gemini_models", Surface.GEMINI, billed=False, by_model=False)
GEMINI_MODEL = Endpoint("gemini_model", Surface.GEMINI, billed=False, by_model=False)
# Every other route of a surface's own vendor, passed through as it is.
ANTHROPIC_OTHER = Endpoint("other", Surface.ANTHROPIC, billed=False, by_model=False, streamed=True)
OPENAI_OTHER = Endpoint("other", Surface.OPENAI, billed=False, by_model=False, streamed=True)
MODELS = Endpoint("models", Surface.OPENAI, proxied=False)
MODEL = Endpoint("model", Surface.OPENAI, proxied=False)
HEALTHZ = Endpoint("healthz", Surface.OPENAI, proxied=False)
READYZ = Endpoint("readyz", Surface.OPENAI, proxied=False)
MODELS_PAGE = Endpoint("models_page", Surface.OPENAI, proxied=False)
PRICING = Endpoint("pricing", Surface.OPENAI, proxied=False)
CLAUDE_CODE_SCRIPT = Endpoint("claudecode_sh", Surface.OPENAI, proxied=False)
KEY_INFO = Endpoint("key", Surface.OPENAI, proxied=False)
HOME = Endpoint("home", Surface.OPENAI, proxied=False)
# Mistakes answered with a hint: a GET of a POST-only route, a base URL that ends in /v1.
POST_ONLY = Endpoint("post_only", Surface.ANTHROPIC, proxied=False)
DOUBLED_VERSION = Endpoint("doubled_version", Surface.OPENAI, proxied=False)

_EXACT: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/messages"): MESSAGES,
    ("POST", "/v1/messages/count_tokens"): COUNT_TOKENS,
    ("POST", "/v1/chat/completions"): CHAT,
    ("POST", "/v1/responses"): RESPONSES,
    ("POST", "/v1/embeddings"): EMBEDDINGS,
    ("GET", "/v1beta/models"): GEMINI_MODELS,
    ("GET", "/healthz"): HEALTHZ,
    ("GET", "/readyz"): READYZ,
    ("GET", "/models"): MODELS_PAGE,
    ("GET", "/api/pricing"): PRICING,
    ("GET", "/api/key"): KEY_INFO,
    ("GET", "/sh/claudecode.sh"): CLAUDE_CODE_SCRIPT,
    ("GET", "/"): HOME,
    ("HEAD", "/"): HOME,
    ("GET", "/v1/messages"): POST_ONLY,
}

# The OpenAI routes that name no model in a JSON body, passed through to OpenAI whole. `/v1/files`
# is Anthropic's too: a request that announces `anthropic-version` goes there instead.
_OPENAI_OTHER = ("/v1/files", "/v1/batches", "/v1/uploads", "/v1/images", "/v1/audio", "/v1/moderations")

# Gemini puts the model in the path: /v1beta/models/gemini-2.5-pro:streamGenerateContent
_GEMINI_METHODS = {
    "generateContent": GENERATE,
    "streamGenerateContent": STREAM_GENERATE,
    "countTokens": GEMINI_COUNT_TOKENS,
    "embedContent": EMBED_CONTENT,
    "batchEmbedContents": BATCH_EMBED_CONTENTS,
}
_GEMINI_CALL = re.compile(r"/(?:v1beta|v1)/models/([^/:]+):([A-Za-z]+)")
_MODELS = "/v1/models"
_MODEL_PREFIX = "/v1/models/"
_GEMINI_MODEL_PREFIX = "/v1beta/models/"
# Which API a `GET /v1/models[/{id}]` speaks, by surface: the path is shared by three.
_LISTS = {
    Surface.OPENAI: (MODELS, MODEL),
    Surface.ANTHROPIC: (ANTHROPIC_MODELS, ANTHROPIC_MODEL),
    Surface.GEMINI: (GEMINI_MODELS, GEMINI_MODEL),
}


def match(
    method: str, path: str, headers: Sequence[tuple[bytes, bytes]] = (), query: bytes = b""
) -> tuple[Endpoint | None, dict[str, str]]:
    """The endpoint for a request, and what its path names. `headers` (ASGI's, names lowercase)
    and `query` are read only for `GET /v1/models[/{id}]`, which three APIs share."""
    endpoint = _EXACT.get((method, path))
    if endpoint is not None:
        return endpoint, {}
    if method == "POST" and (call := _GEMINI_CALL.fullmatch(path)):
        endpoint = _GEMINI_METHODS.get(call.group(2))
        return (endpoint, {"model": call.group(1)}) if endpoint is not None else (None, {})
    if method == "GET":
        if path == _MODELS:
            return _LISTS[models_surface(headers, query)][0], {}
        for prefix in (_MODEL_PREFIX, _GEMINI_MODEL_PREFIX):
            if path.startswith(prefix):
                model_id = path[len(prefix) :]
                if not model_id or "/" in model_id:
                    return None, {}
                surface = models_surface(headers, query) if prefix == _MODEL_PREFIX else Surface.GEMINI
                return _LISTS[surface][1], {"model_id": model_id}
    if path.startswith("/v1/"):
        return _other(path, headers), {}
    return None, {}


def _other(path: str, headers: Sequence[tuple[bytes, bytes]]) -> Endpoint | None:
    """A `/v1/...` route no table names: another of a vendor's own, a doubled version, or none."""
    if path.startswith("/v1/v1/"):
        return DOUBLED_VERSION
    if path.startswith("/v1/messages/") or speaks_anthropic(headers):
        return ANTHROPIC_OTHER
    if _under(path, _OPENAI_OTHER):
        return OPENAI_OTHER
    return None


# Other routes that cost nothing themselves: files and batches are stored and managed for free
# (a batch's requests are billed as its results).
_FREE = {
    Surface.ANTHROPIC: ("/v1/files", "/v1/messages/batches"),
    Surface.OPENAI: ("/v1/files", "/v1/batches", "/v1/uploads", "/v1/moderations"),
}


def unpriced(surface: Surface, path: str) -> bool:
    """Whether an answered request on another route may have cost money buzz cannot read
    (images, audio, a route added after this gateway): its row says unpriced, never $0."""
    return not _under(path, _FREE.get(surface, ()))


def _under(path: str, prefixes: Sequence[str]) -> bool:
    """`path` is one of `prefixes`, or below one."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def speaks_anthropic(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Anthropic's SDKs and Claude Code send `anthropic-version` on every request."""
    return any(name == b"anthropic-version" for name, _ in headers)


def models_surface(headers: Sequence[tuple[bytes, bytes]], query: bytes) -> Surface:
    """The API of a `GET /v1/models[/{id}]`, by where the key is and what the client announces.

    Gemini's key is in `x-goog-api-key` or `?key=` (google-genai 3.x uses `/v1/`); Anthropic's
    clients send `anthropic-version`, or the key in `x-api-key`; anything else is the OpenAI SDK.
    """
    names = {name for name, _ in headers}
    if b"x-goog-api-key" in names:
        return Surface.GEMINI
    if has_query_key(query) and b"x-api-key" not in names and b"authorization" not in names:
        return Surface.GEMINI
    if b"anthropic-version" in names or b"x-api-key" in names:
        return Surface.ANTHROPIC
    return Surface.OPENAI


def has_query_key(query: bytes) -> bool:
    return bool(query) and any(part.startswith(b"key=") for part in query.split(b"&"))
