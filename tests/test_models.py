"""`GET /v1/models[/{id}]`: Anthropic's shape and cursor pagination, from buzz's catalogue."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import anthropic
import pytest

from buzz.catalogue import Catalogue
from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess

BRIEF_IDS = {
    "claude-opus-4-8",
    "claude-opus-4-6",
    "claude-opus-4-5-20251101",
    "claude-sonnet-4-6",
    "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5-20251001",
}


def _get(url: str, key: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_sdk_lists_every_model_across_pages(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)
    listed = [model.id for model in client.models.list(limit=4)]  # the SDK follows after_id itself
    assert set(listed) >= BRIEF_IDS
    assert listed == [entry.id for entry in Catalogue.default().list("anthropic")]
    assert len(listed) == len(set(listed)) > 8
    assert fake.requests == []  # answered by buzz, not forwarded


def test_pagination_fields_forward_and_backward(buzz: BuzzProcess, key: str) -> None:
    everything = [entry.id for entry in Catalogue.default().list("anthropic")]
    status, first = _get(f"{buzz.url}/v1/models?limit=3", key)
    assert status == 200
    assert [m["id"] for m in first["data"]] == everything[:3]  # type: ignore[index,union-attr]
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, everything[0], everything[2])
    _, second = _get(f"{buzz.url}/v1/models?limit=3&after_id={everything[2]}", key)
    assert [m["id"] for m in second["data"]] == everything[3:6]  # type: ignore[index,union-attr]
    _, back = _get(f"{buzz.url}/v1/models?limit=2&before_id={everything[5]}", key)
    assert [m["id"] for m in back["data"]] == everything[3:5]  # type: ignore[index,union-attr]
    assert back["has_more"] is True
    _, last = _get(f"{buzz.url}/v1/models?limit=1000", key)
    assert last["has_more"] is False and len(last["data"]) == len(everything)  # type: ignore[arg-type]
    entry = last["data"][0]  # type: ignore[index]
    assert set(entry) >= {"type", "id", "display_name", "created_at"} and entry["type"] == "model"


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=abc", "after_id=a&before_id=b"])
def test_bad_pagination_is_a_gateway_400(buzz: BuzzProcess, key: str, query: str) -> None:
    status, body = _get(f"{buzz.url}/v1/models?{query}", key)
    assert status == 400
    assert body["error"]["type"] == "gateway_invalid_request_error"  # type: ignore[index]


def test_get_one_model_and_unknown(buzz: BuzzProcess, key: str) -> None:
    client = anthropic.Anthropic(api_key=key, base_url=buzz.url, max_retries=0)
    model = client.models.retrieve("claude-sonnet-4-6")
    assert model.id == "claude-sonnet-4-6" and model.display_name
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_models_need_a_key(buzz: BuzzProcess) -> None:
    status, body = _get(f"{buzz.url}/v1/models", "buzz-wrong")
    assert status == 401
    assert body["error"]["type"] == "gateway_authentication_error"  # type: ignore[index]
