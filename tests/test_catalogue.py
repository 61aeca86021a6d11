from __future__ import annotations

from datetime import datetime

import pytest

from buzz.catalogue import Catalogue, ModelEntry

BRIEF_IDS = [
    "claude-opus-4-8",
    "claude-opus-4-6",
    "claude-opus-4-5-20251101",
    "claude-sonnet-4-6",
    "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5-20251001",
]


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.default()


def ids(entries: list[ModelEntry]) -> list[str]:
    return [e.id for e in entries]


def test_holds_the_brief_and_current_models(catalogue: Catalogue) -> None:
    for model in [*BRIEF_IDS, "claude-opus-4-7", "claude-opus-5-5", "claude-haiku-5-5", "claude-mythos-5-2"]:
        entry = catalogue.get(model)
        assert entry is not None and entry.id == model and entry.provider == "anthropic"
    listed = ids(catalogue.list())
    assert not [m for m in listed if m.startswith(("claude-2", "claude-3", "claude-v1"))]
    assert len(listed) == len(set(listed))


def test_names_windows_and_dates_from_genai_prices(catalogue: Catalogue) -> None:
    opus = catalogue.get("claude-opus-4-8")
    assert opus is not None
    assert (opus.display_name, opus.family, opus.context_window) == ("Claude Opus 4.8", "opus", 1_000_000)
    assert opus.created_at == "2026-05-28T00:00:00Z"
    sonnet = catalogue.get("claude-sonnet-4-5-20250929")
    assert sonnet is not None
    assert (sonnet.created_at, sonnet.context_window) == ("2025-09-29T00:00:00Z", 200_000)  # from its suffix


def test_aliases_resolve_to_the_snapshot(catalogue: Catalogue) -> None:
    entry = catalogue.get("claude-haiku-4-5")
    assert entry is not None and entry.id == "claude-haiku-4-5-20251001"
    assert catalogue.get("claude-nonexistent") is None


def test_list_is_newest_first(catalogue: Catalogue) -> None:
    listed = catalogue.list()
    keys = [(datetime.fromisoformat(e.created_at), e.id) for e in listed]
    assert keys == sorted(keys, reverse=True)
    assert {e.provider for e in listed} == {"anthropic", "openai", "google", "xai"}
    assert catalogue.list("anthropic") == [e for e in listed if e.provider == "anthropic"]
    assert all(e.id.startswith("grok-") for e in catalogue.list("xai"))


def test_extra_entries_add_and_replace() -> None:
    gpt = ModelEntry("gpt-5", "openai", "GPT-5", "", "2025-08-07T00:00:00Z", 400_000)
    mine = ModelEntry("claude-opus-4-8", "anthropic", "House Opus", "opus", "2026-05-28T00:00:00Z")
    catalogue = Catalogue.default(extra=[gpt, mine])
    assert catalogue.provider_for("gpt-5") == "openai"
    assert catalogue.get("gpt-5") == gpt and gpt in catalogue.list("openai")
    assert catalogue.get("claude-opus-4-8") == mine


@pytest.mark.parametrize(
    "model",
    ["claude-opus-4-8", "claude-opus-9-9", "claude-opus-4-8-20991231", "claude-mythos-preview", "claude-x"],
)
def test_any_claude_id_routes_to_anthropic_verbatim(catalogue: Catalogue, model: str) -> None:
    assert catalogue.provider_for(model) == "anthropic"


@pytest.mark.parametrize("model", ["mistral-large", "llama-3", "claude", "", "anthropic/claude-opus-4-8"])
def test_other_ids_do_not_route(catalogue: Catalogue, model: str) -> None:
    assert catalogue.provider_for(model) is None


def test_entry_requires_an_rfc3339_time() -> None:
    with pytest.raises(ValueError):
        ModelEntry("x", "anthropic", "X", "", "2026-05-28")  # no offset
    with pytest.raises(ValueError):
        ModelEntry("x", "anthropic", "X", "", "yesterday")


def test_every_vendor_routes_by_pattern_and_operators_add_their_own() -> None:
    catalogue = Catalogue.default(models={"ft:gpt-4.1:acme": "openai"}, patterns={"llama-*": "xai", "gpt-x*": "google"})
    routes = {
        "gpt-9": "openai",
        "o3-mini-2027": "openai",
        "o4-mini": "openai",
        "chatgpt-4o-latest": "openai",
        "text-embedding-3-large": "openai",
        "gemini-9-ultra": "google",
        "grok-7": "xai",
        "claude-opus-9": "anthropic",
        "ft:gpt-4.1:acme": "openai",
        "llama-4-70b": "xai",
        "gpt-xl": "google",  # an operator's pattern comes before the built-in ones
    }
    for model, provider in routes.items():
        assert catalogue.provider_for(model) == provider, model
    assert catalogue.provider_for("mistral-large") is None
    assert catalogue.provider_for("o2") is None
