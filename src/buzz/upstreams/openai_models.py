"""`GET /v1/models[/{id}]` in OpenAI's shape, from the union of the vendors' own lists.

Each entry is OpenAI's model object with `owned_by` naming the vendor. An entry buzz took from its
catalogue, because the vendor's own list could not be read, also carries `"buzz_fallback": true`.
"""

from __future__ import annotations

from collections.abc import Sequence

from buzz import providers
from buzz.errors import GatewayError, Kind
from buzz.upstreams.model_lists import ListedModel

# Response header naming the vendors (comma-separated) whose entries came from buzz's catalogue.
FALLBACK_HEADER = b"x-buzz-models-fallback"


def entry(model: ListedModel) -> dict[str, object]:
    document: dict[str, object] = {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": providers.get(model.provider).owned_by,
    }
    if model.from_catalogue:
        document["buzz_fallback"] = True
    return document


def listing(models: Sequence[ListedModel]) -> dict[str, object]:
    # OpenAI's list has no pagination: every model in one answer.
    return {"object": "list", "data": [entry(model) for model in models]}


def one(models: Sequence[ListedModel], model_id: str) -> dict[str, object]:
    for model in models:
        if model.id == model_id:
            return entry(model)
    raise GatewayError(
        Kind.NOT_FOUND, f"model {model_id!r} is not available through this gateway; GET /v1/models lists those that are"
    )
