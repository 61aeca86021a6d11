"""`GET /v1/models[/{id}]` in Anthropic's shape, answered from buzz's own catalogue.

The list is what buzz routes, not what the vendor has: a client (Claude Code's model
discovery among them) should be offered exactly the models it can use through this gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs

from buzz.catalogue import Catalogue, ModelEntry
from buzz.errors import GatewayError, Kind

_MAX_LIMIT = 1000


def _entry(entry: ModelEntry) -> dict[str, object]:
    document: dict[str, object] = {
        "type": "model",
        "id": entry.id,
        "display_name": entry.display_name,
        "created_at": entry.created_at,
    }
    if entry.context_window:
        document["max_input_tokens"] = entry.context_window
    return document


def listing(entries: Sequence[ModelEntry], catalogue: Catalogue, query_string: bytes) -> dict[str, object]:
    query = parse_qs(query_string.decode("latin-1"))
    try:
        limit = int(query.get("limit", ["20"])[0])
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_LIMIT:
        raise GatewayError(Kind.INVALID_REQUEST, f"limit: must be an integer from 1 to {_MAX_LIMIT}")
    after_id = query.get("after_id", [None])[0]
    before_id = query.get("before_id", [None])[0]
    if after_id and before_id:
        raise GatewayError(Kind.INVALID_REQUEST, "after_id and before_id cannot be used together")
    page, has_more = catalogue.page(list(entries), limit=limit, after_id=after_id, before_id=before_id)
    return {
        "data": [_entry(entry) for entry in page],
        "has_more": has_more,
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
    }


def one(entries: Sequence[ModelEntry], catalogue: Catalogue, model_id: str) -> dict[str, object]:
    entry = catalogue.get(model_id)
    if entry is None or entry not in entries:
        raise GatewayError(Kind.NOT_FOUND, f"model {model_id!r} is not in this gateway's catalogue")
    return _entry(entry)
