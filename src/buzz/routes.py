"""The routes buzz answers, as one table. Everything else is a `gateway_not_found_error`."""

from __future__ import annotations

import re
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
    billed: bool = True  # count_tokens is forwarded but costs nothing


MESSAGES = Endpoint("messages", Surface.ANTHROPIC)
COUNT_TOKENS = Endpoint("count_tokens", Surface.ANTHROPIC, billed=False)
CHAT = Endpoint("chat", Surface.OPENAI)
RESPONSES = Endpoint("responses", Surface.OPENAI)
EMBEDDINGS = Endpoint("embeddings", Surface.OPENAI)
GENERATE = Endpoint("generate", Surface.GEMINI)
STREAM_GENERATE = Endpoint("stream_generate", Surface.GEMINI)
MODELS = Endpoint("models", Surface.OPENAI, proxied=False)
MODEL = Endpoint("model", Surface.OPENAI, proxied=False)
HEALTHZ = Endpoint("healthz", Surface.OPENAI, proxied=False)
MODELS_PAGE = Endpoint("models_page", Surface.OPENAI, proxied=False)
PRICING = Endpoint("pricing", Surface.OPENAI, proxied=False)
CLAUDE_CODE_SCRIPT = Endpoint("claudecode_sh", Surface.OPENAI, proxied=False)

_EXACT: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/messages"): MESSAGES,
    ("POST", "/v1/messages/count_tokens"): COUNT_TOKENS,
    ("POST", "/v1/chat/completions"): CHAT,
    ("POST", "/v1/responses"): RESPONSES,
    ("POST", "/v1/embeddings"): EMBEDDINGS,
    ("GET", "/v1/models"): MODELS,
    ("GET", "/healthz"): HEALTHZ,
    ("GET", "/models"): MODELS_PAGE,
    ("GET", "/api/pricing"): PRICING,
    ("GET", "/sh/claudecode.sh"): CLAUDE_CODE_SCRIPT,
}

_MODEL_PREFIX = "/v1/models/"
# Gemini puts the model in the path: /v1beta/models/gemini-2.5-pro:streamGenerateContent
_GEMINI = re.compile(r"/(?:v1beta|v1)/models/([^/:]+):(generateContent|streamGenerateContent)")


def match(method: str, path: str) -> tuple[Endpoint | None, dict[str, str]]:
    endpoint = _EXACT.get((method, path))
    if endpoint is not None:
        return endpoint, {}
    if method == "POST" and (gemini := _GEMINI.fullmatch(path)):
        action = STREAM_GENERATE if gemini.group(2) == "streamGenerateContent" else GENERATE
        return action, {"model": gemini.group(1)}
    if method == "GET" and path.startswith(_MODEL_PREFIX):
        model_id = path[len(_MODEL_PREFIX) :]
        if model_id and "/" not in model_id:
            return MODEL, {"model_id": model_id}
    return None, {}
