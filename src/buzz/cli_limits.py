"""Command-line options shared by `keys` and `projects`: limits, read as text and validated by
the same typed definitions as the admin API (`buzz.changes`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from buzz.changes import InvalidChange, convert
from buzz.limits.base import Limits
from buzz.money import usd_cents

T = TypeVar("T")
UNSET = "none"  # what an update passes to remove a limit, an expiry or an allow-list

# (option, field of buzz.changes.LimitChanges, help)
LIMIT_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--rpm", "rpm", "requests per minute"),
    ("--itpm", "itpm", "input tokens per minute"),
    ("--otpm", "otpm", "output tokens per minute"),
    ("--concurrency", "concurrency", "requests in flight at once"),
    ("--daily-usd", "daily_usd", "spend per UTC day, USD"),
    ("--monthly-usd", "monthly_usd", "spend per UTC calendar month, USD"),
)


def limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option, field, text in reversed(LIMIT_OPTIONS):
        command = click.option(option, field, default=None, help=f"{text} ('{UNSET}' removes it)")(command)
    return command


def given(values: dict[str, str | None]) -> dict[str, str | None]:
    """The options the user gave, with 'none' meaning remove (None); the rest left out."""
    return {name: None if value.lower() == UNSET else value for name, value in values.items() if value is not None}


def typed(values: dict[str, Any], kind: type[T]) -> T:
    try:
        return convert(values, kind)
    except InvalidChange as exc:
        raise click.UsageError(str(exc)) from None


def describe(limits: Limits) -> str:
    parts = [
        f"{name} {getattr(limits, name)}" for name in ("rpm", "itpm", "otpm", "concurrency") if getattr(limits, name)
    ]
    if limits.daily_nanos is not None:
        parts.append(f"daily {usd_cents(limits.daily_nanos)}")
    if limits.monthly_nanos is not None:
        parts.append(f"monthly {usd_cents(limits.monthly_nanos)}")
    return ", ".join(parts) or "none"
