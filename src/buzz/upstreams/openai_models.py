"""`GET /v1/models[/{id}]` in OpenAI's shape, for OpenAI-SDK clients, from buzz's catalogue."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from buzz.catalogue import Catalogue, ModelEntry
from buzz.errors import GatewayError, Kind

# buzz's provider names as OpenAI's `owned_by` shows vendors.
_OWNER = {"anthropic": "anthropic", "openai": "openai", "google": "google", "xai": "xai"}


def _entry(entry: ModelEntry) -> dict[str, object]:
    created = int(datetime.fromisoformat(entry.created_at).timestamp())
    return {"id": entry.id, "object": "model", "created": created, "owned_by": _OWNER.get(entry.provider, "buzz")}


def listing(entries: Sequence[ModelEntry], catalogue: Catalogue, query_string: bytes) -> dict[str, object]:
    # OpenAI's list has no pagination: every routable model in one answer.
    return {"object": "list", "data": [_entry(entry) for entry in entries]}


def one(entries: Sequence[ModelEntry], catalogue: Catalogue, model_id: str) -> dict[str, object]:
    entry = catalogue.get(model_id)
    if entry is None or entry not in entries:
        raise GatewayError(Kind.NOT_FOUND, f"model {model_id!r} is not in this gateway's catalogue")
    return _entry(entry)
