"""How the console shows what the store holds: money exactly (never a float, unknown never $0),
times in UTC, limits as people read them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from buzz.console.forms import expiry_field
from buzz.limits.base import Limits, Remaining
from buzz.money import UNPRICED, usd_exact
from buzz.store.base import ConsoleTokenRecord, KeyRecord, ProjectRecord, Totals

# What a redirect after a change may say, by a fixed code in its query: never free text.
NOTICES = {
    "key-saved": "The key's changes are saved. The gateway applies them from its next request.",
    "key-revoked": "The key is revoked. The gateway refuses it from its next request.",
    "token-revoked": "The console token is revoked. Its sessions have ended.",
    "project-created": "The project is created.",
    "project-saved": "The project's changes are saved. The gateway applies them from its next request.",
    "balance-added": "The balance is updated.",
}


def usd(nanos: int | None) -> str:
    """Exact, grouped, with the sign before the dollar: "$1,234.50", "-$0.0000015", "—" unknown."""
    if nanos is None:
        return UNPRICED
    whole, _, fraction = usd_exact(abs(nanos)).partition(".")
    return f"{'-' if nanos < 0 else ''}${int(whole):,}.{fraction}"


def usd_field(nanos: int | None) -> str:
    """A stored amount as a form field's value, exact, so saving the form unchanged changes nothing."""
    return "" if nanos is None else usd_exact(nanos)


def spend(totals: Totals) -> str:
    """A sum that leaves unpriced requests out is a lower bound; with nothing priced, unknown."""
    if totals.unpriced and not totals.cost_nanos:
        return UNPRICED
    return ("≥ " if totals.unpriced else "") + usd(totals.cost_nanos)


def when(unix: float | None) -> str:
    return "never" if unix is None else datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M UTC")


def stamp(text: str | None) -> str:
    """A stored ISO timestamp (2026-07-01T12:00:00.000Z) as people read it."""
    return "" if not text else f"{text[:10]} {text[11:16]} UTC"


@dataclass(frozen=True, slots=True)
class LimitLine:
    name: str
    value: str


def limit_lines(limits: Limits) -> list[LimitLine]:
    """The limits that are set, in a fixed order; none set means no line at all."""
    lines = []
    for name, label in (("rpm", "requests/min"), ("itpm", "input tokens/min"), ("otpm", "output tokens/min")):
        value = getattr(limits, name)
        if value is not None:
            lines.append(LimitLine(label, f"{value:,}"))
    if limits.concurrency is not None:
        lines.append(LimitLine("concurrent", f"{limits.concurrency:,}"))
    if limits.daily_nanos is not None:
        lines.append(LimitLine("per day", usd(limits.daily_nanos)))
    if limits.monthly_nanos is not None:
        lines.append(LimitLine("per month", usd(limits.monthly_nanos)))
    return lines


def limit_fields(limits: Limits) -> dict[str, str]:
    """A form's limit fields, filled with what is set."""
    counts = {name: "" if getattr(limits, name) is None else str(getattr(limits, name)) for name in _COUNTS}
    return {**counts, "daily_usd": usd_field(limits.daily_nanos), "monthly_usd": usd_field(limits.monthly_nanos)}


_COUNTS = ("rpm", "itpm", "otpm", "concurrency")


def key_status(key: KeyRecord, now: float) -> str:
    if not key.active:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


@dataclass(frozen=True, slots=True)
class KeyView:
    id: str
    name: str
    project: str
    status: str
    created: str
    expires: str
    models: tuple[str, ...] | None
    limits: list[LimitLine]

    @property
    def active(self) -> bool:
        return self.status != "revoked"


def key_view(key: KeyRecord, now: float) -> KeyView:
    return KeyView(
        key.id,
        key.name or "",
        key.project,
        key_status(key, now),
        stamp(key.created_at),
        when(key.expires_at),
        key.allowed_models,
        limit_lines(key.limits),
    )


def key_fields(key: KeyRecord) -> dict[str, str]:
    models = " ".join(key.allowed_models) if key.allowed_models is not None else ""
    return {
        "name": key.name or "",
        **limit_fields(key.limits),
        "expires": expiry_field(key.expires_at),
        "models": models,
    }


@dataclass(frozen=True, slots=True)
class ProjectView:
    name: str
    prepaid: bool
    balance: str
    limits: list[LimitLine]
    created: str


def project_view(project: ProjectRecord, balance_nanos: int) -> ProjectView:
    return ProjectView(
        project.name, project.prepaid, usd(balance_nanos), limit_lines(project.limits), stamp(project.created_at)
    )


@dataclass(frozen=True, slots=True)
class TokenView:
    id: str
    name: str
    project: str
    created: str
    revoked: str
    active: bool


def token_view(token: ConsoleTokenRecord) -> TokenView:
    return TokenView(
        token.id,
        token.name or "",
        token.project,
        stamp(token.created_at),
        stamp(token.revoked_at),
        token.revoked_at is None,
    )


# The keys list's headroom: every limit a key can have, in this order, "—" for those not set.
_HEADROOM = (
    ("rpm", "rpm", "requests/min"),
    ("itpm", "itpm", "input tokens/min"),
    ("otpm", "otpm", "output tokens/min"),
    ("concurrency", "concurrency", "concurrent"),
    ("daily", "daily_nanos", "per day"),
    ("monthly", "monthly_nanos", "per month"),
)


@dataclass(frozen=True, slots=True)
class HeadroomLine:
    name: str
    limit: str  # "600", "$20.00", or "—" when not set
    left: str  # "598 left", "" when not set or not known
    short: bool  # nothing left


def headroom_lines(limits: Limits, remaining: Sequence[Remaining] | None) -> list[HeadroomLine]:
    """Each limit with what it has left now (`remaining` from `Limiter.headroom`; None when the
    limiter could not be asked)."""
    left: dict[str, int] = {} if remaining is None else {r[1]: r[3] for r in remaining}
    lines = []
    for name, field, label in _HEADROOM:
        cap: int | None = getattr(limits, field)
        if cap is None:
            lines.append(HeadroomLine(label, "—", "", False))
            continue
        money = field.endswith("_nanos")
        rest = left.get(name)
        text = "" if rest is None else f"{usd(rest) if money else f'{rest:,}'} left"
        lines.append(HeadroomLine(label, usd(cap) if money else f"{cap:,}", text, rest is not None and rest <= 0))
    return lines


@dataclass(frozen=True, slots=True)
class KeyActivity:
    last_used: str
    today: str  # spend of the UTC day, from the ledger
    month: str
    headroom: list[HeadroomLine] | None  # None: the key has no limits
