"""The models buzz knows: how an id is routed, and what is listed when a vendor's own list is not.

Routing is by pattern, not by list: each vendor's patterns (`buzz.providers`: `claude-*` to
Anthropic, `gpt-*`, `o3*`, `ft:*`... to OpenAI, `gemini-*` to Google, `grok-*` to xAI) send ids
verbatim, so a model released tomorrow works before buzz knows its name. An operator adds ids and
patterns of their own (they win over the built-in ones). The entries are the current Claude models
plus the current models genai-prices knows, with names and context windows taken from
genai-prices. They fill the public model page, and stand in for a vendor on the OpenAI surface's
`GET /v1/models` when that vendor's own list cannot be fetched.
"""

from __future__ import annotations

import builtins
import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from genai_prices.data_snapshot import get_snapshot

from buzz import providers

# For ids with no release date of their own (no -YYYYMMDD suffix, no announcement we could find):
# the day genai-prices 0.2.3's Anthropic data was last verified, by which all of them were listed.
# It keeps them above every dated model, which matches their version numbers.
UNDATED = "2026-10-14T00:00:00Z"

# (id, aliases, created_at or None). A snapshot id's date is its -YYYYMMDD suffix; undated ids use
# public launch announcements. Skipped: claude-2/claude-3*/claude-v1 (legacy) and Opus 4/Sonnet 4
# (retired June 2026); they still route, being claude-*.
_CLAUDE: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("claude-opus-4-1-20250805", ("claude-opus-4-1",), None),
    ("claude-sonnet-4-5-20250929", ("claude-sonnet-4-5",), None),
    ("claude-haiku-4-5-20251001", ("claude-haiku-4-5",), None),
    ("claude-opus-4-5-20251101", ("claude-opus-4-5",), None),
    ("claude-opus-4-6", (), "2026-02-05T00:00:00Z"),
    ("claude-sonnet-4-6", (), "2026-02-17T00:00:00Z"),
    ("claude-opus-4-7", (), "2026-04-16T00:00:00Z"),
    ("claude-opus-4-8", (), "2026-05-28T00:00:00Z"),
    ("claude-fable-5", (), "2026-06-09T00:00:00Z"),
    ("claude-sonnet-5", (), "2026-06-30T00:00:00Z"),
    ("claude-fable-5-1", (), None),
    ("claude-fable-5-2", (), None),
    ("claude-mythos-5-2", (), None),
    ("claude-opus-5", (), None),
    ("claude-opus-5-5", (), None),
    ("claude-sonnet-5-5", (), None),
    ("claude-haiku-5-5", (), None),
)
_FAMILIES = ("opus", "sonnet", "haiku", "fable", "mythos")

# Checked in order; an operator's own patterns come before these.
BUILTIN_PATTERNS: tuple[tuple[str, str], ...] = tuple(
    (pattern, provider.name) for provider in providers.REGISTRY for pattern in provider.patterns
)
# Listed models are those a chat, responses or embeddings client can call; these words mark
# image, audio and realtime models, fine-tune prefixes and legacy completions models.
_UNLISTED = re.compile(
    r"image|audio|tts|realtime|transcribe|live|robotics|vision|search|computer-use|ft:|:|banana|omni|"
    r"oss|voice|^(ada|babbage|curie|davinci)|instruct|-$"
)
_SNAPSHOT = re.compile(r"-(\d{4})(\d{2})(\d{2})$")


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"created_at must carry a UTC offset, got {value!r}")
    return parsed


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    provider: str
    display_name: str
    family: str  # "opus", "sonnet", ...; "" when the id names none
    created_at: str  # RFC 3339, as /v1/models returns it
    context_window: int | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _parse_time(self.created_at)  # fail at construction, not while sorting a request's page


def _family(model_id: str) -> str:
    words = re.split(r"[-.@]", model_id.lower())
    return next((w for w in words if w in _FAMILIES), "")


def _claude_entries() -> list[ModelEntry]:
    anthropic = next(p for p in get_snapshot().providers if p.id == "anthropic")
    known = {m.id: m for m in anthropic.models}
    entries = []
    for model_id, aliases, created in _CLAUDE:
        base_id = _SNAPSHOT.sub("", model_id)
        if created is None:
            dated = _SNAPSHOT.search(model_id)
            created = f"{dated[1]}-{dated[2]}-{dated[3]}T00:00:00Z" if dated else UNDATED
        info = known.get(base_id)
        family = _family(model_id)
        # Claude 4.5+ ids read claude-<family>-<major>-<minor>; the fallback name follows suit.
        version = base_id.removeprefix(f"claude-{family}-").replace("-", ".")
        name = info.name if info is not None and info.name else f"Claude {family.title()} {version}"
        window = info.context_window if info is not None else None
        entries.append(ModelEntry(model_id, "anthropic", name, family, created, window, aliases))
    return entries


def _vendor_entries() -> list[ModelEntry]:
    """OpenAI, Gemini and Grok models genai-prices knows, for listing. No release dates are in
    the data, so they carry the documented fixed date and list by id."""
    entries = []
    snapshot = get_snapshot()
    for vendor in providers.REGISTRY:
        provider = vendor.name
        if provider == "anthropic":
            continue
        data = next(p for p in snapshot.providers if p.id == vendor.price_id)
        for info in data.models:
            if _UNLISTED.search(info.id) or _builtin_provider(info.id) != provider:
                continue
            name = info.name or info.id
            entries.append(ModelEntry(info.id, provider, name, "", UNDATED, info.context_window))
    return entries


def _builtin_provider(model: str) -> str | None:
    lowered = model.lower()
    return next((provider for pattern, provider in BUILTIN_PATTERNS if fnmatch.fnmatchcase(lowered, pattern)), None)


class Catalogue:
    """An immutable set of model entries, looked up by id or alias and listed newest first."""

    def __init__(
        self,
        entries: Iterable[ModelEntry],
        patterns: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._patterns = tuple((pattern.lower(), provider) for pattern, provider in patterns)
        by_id = {entry.id: entry for entry in entries}  # a later entry replaces an earlier one
        self._entries = tuple(sorted(by_id.values(), key=lambda e: (_parse_time(e.created_at), e.id), reverse=True))
        lookup: dict[str, ModelEntry] = {}
        for entry in self._entries:
            for alias in entry.aliases:
                lookup.setdefault(alias, entry)  # the newest model keeps a contested alias
        lookup.update(by_id)  # an id always means itself, never another entry's alias
        self._lookup = lookup

    @classmethod
    def default(
        cls,
        extra: Iterable[ModelEntry] = (),
        models: Mapping[str, str] | None = None,
        patterns: Mapping[str, str] | None = None,
    ) -> Catalogue:
        """The built-in models, plus `extra` entries (which replace built-ins of the same id), an
        operator's own `models` (id -> provider) and `patterns` (glob -> provider)."""
        own = [ModelEntry(model, provider, model, "", UNDATED) for model, provider in (models or {}).items()]
        return cls([*_claude_entries(), *_vendor_entries(), *extra, *own], tuple((patterns or {}).items()))

    def provider_for(self, model: str) -> str | None:
        """Where a request for `model` goes. Unknown ids that match a family pattern go to that
        vendor verbatim, so the vendor, not buzz, decides whether they exist."""
        if (entry := self._lookup.get(model)) is not None:
            return entry.provider
        lowered = model.lower()
        for pattern, provider in self._patterns:
            if fnmatch.fnmatchcase(lowered, pattern):
                return provider
        return _builtin_provider(model)

    def get(self, model_id: str) -> ModelEntry | None:
        return self._lookup.get(model_id)

    def list(self, provider: str | None = None) -> builtins.list[ModelEntry]:
        return [e for e in self._entries if provider is None or e.provider == provider]
