"""Command-line options for limits, shared by `keys` and `projects`, and the `balance` commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from buzz.config import Config
from buzz.limits.base import Limits
from buzz.store.sqlite import SQLiteStore

NANOS_PER_USD = Decimal(1_000_000_000)
UNSET = "none"  # what an update passes to remove a limit


def usd_to_nanos(text: str) -> int:
    try:
        amount = Decimal(text) * NANOS_PER_USD
    except InvalidOperation as exc:
        raise click.BadParameter(f"{text!r} is not an amount in USD") from exc
    if amount != amount.to_integral_value():
        raise click.BadParameter(f"{text!r} has more precision than a nano-dollar")
    return int(amount)


def usd_text(nanos: int) -> str:
    """An exact amount for scripts: cents always, more digits only when they are not zero."""
    whole, _, fraction = f"{Decimal(nanos) / NANOS_PER_USD:.9f}".partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{whole}.{fraction}"


def nanos_to_usd(nanos: int | None) -> str:
    return "-" if nanos is None else f"${Decimal(nanos) / NANOS_PER_USD:,.2f}"


def _count(text: str) -> int | None:
    if text.lower() == UNSET:
        return None
    if not text.isdigit():
        raise click.BadParameter(f"{text!r}: a whole number, or {UNSET!r} to remove the limit")
    return int(text)


def _usd(text: str) -> int | None:
    return None if text.lower() == UNSET else usd_to_nanos(text)


# (option, column, parser, help)
LIMIT_OPTIONS: tuple[tuple[str, str, Callable[[str], int | None], str], ...] = (
    ("--rpm", "rpm", _count, "requests per minute"),
    ("--itpm", "itpm", _count, "input tokens per minute"),
    ("--otpm", "otpm", _count, "output tokens per minute"),
    ("--concurrency", "concurrency", _count, "requests in flight at once"),
    ("--daily-usd", "daily_nanos", _usd, "spend per UTC day, USD"),
    ("--monthly-usd", "monthly_nanos", _usd, "spend per UTC calendar month, USD"),
)


def limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option, column, _, text in reversed(LIMIT_OPTIONS):
        command = click.option(option, column, default=None, help=f"{text} ('{UNSET}' removes it)")(command)
    return command


def limit_changes(values: dict[str, str | None]) -> dict[str, object]:
    """The limits given on the command line, parsed: column -> value (None removes the limit)."""
    changes: dict[str, object] = {}
    for _, column, parse, _ in LIMIT_OPTIONS:
        raw = values.get(column)
        if raw is not None:
            changes[column] = parse(raw)
    return changes


def as_limits(changes: dict[str, object]) -> Limits:
    return Limits(**{column: changes.get(column) for _, column, _, _ in LIMIT_OPTIONS})  # type: ignore[arg-type]


def parse_expiry(text: str | None) -> str | None:
    if text is None or text.lower() == UNSET:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter("an ISO date or time, e.g. 2027-01-31 or 2027-01-31T12:00:00Z") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_models(text: str | None) -> list[str] | None:
    if text is None or text.lower() == UNSET:
        return None
    models = [part.strip() for part in text.split(",") if part.strip()]
    if not models:
        raise click.BadParameter("a comma-separated list of model ids or patterns (claude-*)")
    return models


def describe(limits: Limits) -> str:
    parts = [
        f"{name} {getattr(limits, name)}" for name in ("rpm", "itpm", "otpm", "concurrency") if getattr(limits, name)
    ]
    if limits.daily_nanos is not None:
        parts.append(f"daily {nanos_to_usd(limits.daily_nanos)}")
    if limits.monthly_nanos is not None:
        parts.append(f"monthly {nanos_to_usd(limits.monthly_nanos)}")
    return ", ".join(parts) or "none"


def add_balance(config: Config, store: SQLiteStore, project: str, nanos: int) -> int:
    """Top up (or correct) a project's balance where the running gateways read it."""
    if store.project(project) is None:
        raise click.ClickException(f"no project {project!r}")
    if config.redis_url:
        from buzz.limits.redis import RedisLimiter

        async def top_up() -> int:
            limiter = RedisLimiter(config.redis_url or "")
            try:
                return await limiter.add_balance(project, nanos)
            finally:
                await limiter.close()

        return asyncio.run(top_up())
    return store.add_balance(project, nanos)
