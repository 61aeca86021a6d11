from __future__ import annotations

import math
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


def synthetic(n: int) -> list[ModelEntry]:
    """n entries, m0 oldest; listed newest first as m{n-1} .. m0."""
    entries = [ModelEntry(f"m{i}", "anthropic", f"M {i}", "opus", f"2026-01-{i + 1:02d}T00:00:00Z") for i in range(n)]
    return Catalogue(entries).list()


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


def test_page_forwards_across_all_pages(catalogue: Catalogue) -> None:
    entries = catalogue.list()  # every vendor's models: several pages
    seen: list[ModelEntry] = []
    page, more = Catalogue.page(entries, limit=5)
    pages = 1
    while True:
        assert 0 < len(page) <= 5
        seen += page
        if not more:
            break
        page, more = Catalogue.page(entries, limit=5, after_id=page[-1].id)
        pages += 1
    assert seen == entries
    assert pages == math.ceil(len(entries) / 5)


def test_page_backwards_across_all_pages(catalogue: Catalogue) -> None:
    entries = catalogue.list()
    last, _ = Catalogue.page(entries, limit=1, after_id=entries[-2].id)
    assert last == [entries[-1]]
    collected: list[ModelEntry] = []
    cursor = last[0].id
    while True:
        page, more = Catalogue.page(entries, limit=4, before_id=cursor)
        assert 0 < len(page) <= 4
        collected = page + collected
        if not more:
            break
        cursor = page[0].id
    assert collected == entries[:-1]


def test_page_exact_windows() -> None:
    entries = synthetic(7)
    assert ids(entries) == ["m6", "m5", "m4", "m3", "m2", "m1", "m0"]
    assert Catalogue.page(entries, limit=3) == (entries[0:3], True)
    assert Catalogue.page(entries, limit=3, after_id="m6") == (entries[1:4], True)
    assert Catalogue.page(entries, limit=3, after_id="m3") == (entries[4:7], False)
    assert Catalogue.page(entries, limit=3, after_id="m0") == ([], False)
    assert Catalogue.page(entries, limit=3, before_id="m0") == (entries[3:6], True)
    assert Catalogue.page(entries, limit=3, before_id="m3") == (entries[0:3], False)
    assert Catalogue.page(entries, limit=3, before_id="m4") == (entries[0:2], False)
    assert Catalogue.page(entries, limit=3, before_id="m6") == ([], False)
    assert Catalogue.page(entries, limit=7) == (entries, False)
    assert Catalogue.page([], limit=3) == ([], False)


def test_page_limit_bounds(catalogue: Catalogue) -> None:
    entries = catalogue.list("anthropic")
    assert Catalogue.page(entries) == (entries, False)  # default 20 covers the built-ins
    assert Catalogue.page(entries, limit=1) == (entries[:1], True)
    assert Catalogue.page(entries, limit=1000) == (entries, False)
    for bad in (0, -1, 1001):
        with pytest.raises(ValueError, match="limit"):
            Catalogue.page(entries, limit=bad)


def test_page_cursor_errors_and_unknown_cursors() -> None:
    entries = synthetic(4)
    with pytest.raises(ValueError, match="together"):
        Catalogue.page(entries, after_id="m1", before_id="m2")
    # An unknown cursor (e.g. a model removed between two requests) ends the walk with an empty page.
    assert Catalogue.page(entries, after_id="gone") == ([], False)
    assert Catalogue.page(entries, before_id="gone") == ([], False)


def test_page_accepts_an_alias_as_cursor(catalogue: Catalogue) -> None:
    entries = catalogue.list()
    by_alias = Catalogue.page(entries, limit=2, after_id="claude-haiku-4-5")
    assert by_alias == Catalogue.page(entries, limit=2, after_id="claude-haiku-4-5-20251001")


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
