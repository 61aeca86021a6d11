"""The routes buzz answers, as one table. Everything else is a `gateway_not_found_error`."""

from __future__ import annotations

from enum import Enum


class Endpoint(Enum):
    MESSAGES = "messages"
    COUNT_TOKENS = "count_tokens"
    MODELS = "models"
    MODEL = "model"
    HEALTHZ = "healthz"


_EXACT: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/messages"): Endpoint.MESSAGES,
    ("POST", "/v1/messages/count_tokens"): Endpoint.COUNT_TOKENS,
    ("GET", "/v1/models"): Endpoint.MODELS,
    ("GET", "/healthz"): Endpoint.HEALTHZ,
}

_MODEL_PREFIX = "/v1/models/"


def match(method: str, path: str) -> tuple[Endpoint | None, dict[str, str]]:
    endpoint = _EXACT.get((method, path))
    if endpoint is not None:
        return endpoint, {}
    if method == "GET" and path.startswith(_MODEL_PREFIX):
        model_id = path[len(_MODEL_PREFIX) :]
        if model_id and "/" not in model_id:
            return Endpoint.MODEL, {"model_id": model_id}
    return None, {}
