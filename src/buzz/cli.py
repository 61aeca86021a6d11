"""The `buzz` command: serve the gateway, manage keys, read usage.

Output meant for scripts goes to stdout alone (a new key, nothing else); what is meant for
people goes to stderr.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from buzz import config as config_module
from buzz.cli_limits import (
    add_balance,
    as_limits,
    describe,
    limit_changes,
    limit_options,
    nanos_to_usd,
    parse_expiry,
    parse_models,
    usd_text,
    usd_to_nanos,
)
from buzz.config import Config, ConfigError
from buzz.proxy.auth import generate_key
from buzz.store.base import GroupBy
from buzz.store.sqlite import SQLiteStore

_DURATION = re.compile(r"(\d+)([mhdw])")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def _config(ctx: click.Context, **flags: Any) -> Config:
    try:
        return config_module.load(ctx.obj.get("config_path"), flags=flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _store(config: Config) -> SQLiteStore:
    return SQLiteStore(config.database_path)


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML configuration file (default: $BUZZ_CONFIG, else none).",
)
@click.version_option(package_name="buzz")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """buzz: a transparent LLM API gateway."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML configuration file.",
)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, config_path: Path | None) -> None:
    """Run the gateway (SQLite in BUZZ_DATA_DIR, migrations applied at start).

    It prints where the data is and which vendors have a credential, then "listening" once the
    socket serves; an address it cannot listen on is a one-line error and exit status 1.
    """
    if config_path is not None:
        ctx.obj["config_path"] = config_path
    config = _config(ctx, host=host, port=port)
    from buzz.server import ListenError, run  # the server stack is imported only when serving

    try:
        run(config)
    except ListenError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def keys() -> None:
    """Create, list and revoke buzz keys."""


@keys.command("create")
@click.option("--project", required=True, help="Project the key bills to.")
@click.option("--name", default=None, help="A label for people.")
@limit_options
@click.option("--expires", default=None, help="When the key stops working (ISO date or time, UTC).")
@click.option("--models", default=None, help="Allowed models: ids or patterns, comma-separated (claude-*,gpt-5.5).")
@click.pass_context
def keys_create(
    ctx: click.Context, /, project: str, name: str | None, expires: str | None, models: str | None, **limits: str | None
) -> None:
    """Print a new key on stdout (shown once; only its hash is stored)."""
    store = _store(_config(ctx))
    new = generate_key()
    store.create_key(
        new.key_id,
        project,
        name,
        new.secret_hash,
        as_limits(limit_changes(limits)),
        parse_expiry(expires),
        parse_models(models),
    )
    store.close()
    click.echo(f"created key {new.key_id} for project {project!r}; it is shown once, store it now", err=True)
    click.echo(new.token)


@keys.command("update")
@click.argument("key_id")
@click.option("--name", default=None, help="A label for people.")
@limit_options
@click.option("--expires", default=None, help="When the key stops working ('none': never).")
@click.option("--models", default=None, help="Allowed models, comma-separated ('none': all).")
@click.pass_context
def keys_update(
    ctx: click.Context, /, key_id: str, name: str | None, expires: str | None, models: str | None, **limits: str | None
) -> None:
    """Change a key's limits, expiry or models; the running gateway applies them on the next request."""
    changes = limit_changes(limits)
    if name is not None:
        changes["name"] = name
    if expires is not None:
        changes["expires_at"] = parse_expiry(expires)
    if models is not None:
        changes["allowed_models"] = parse_models(models)
    store = _store(_config(ctx))
    record = store.update_key(key_id, changes)
    store.close()
    if record is None:
        raise click.ClickException(f"no key {key_id!r}")
    click.echo(f"key {key_id}: limits {describe(record.limits)}", err=True)


@main.group()
def projects() -> None:
    """Create and change projects: their limits and whether they are prepaid."""


@projects.command("create")
@click.argument("name")
@limit_options
@click.option("--prepaid/--postpaid", default=False, help="Whether requests draw down a prepaid balance.")
@click.pass_context
def projects_create(ctx: click.Context, /, name: str, prepaid: bool, **limits: str | None) -> None:
    """Create a project (keys create one on first use too)."""
    _save_project(ctx, name, {**limit_changes(limits), "prepaid": int(prepaid)}, create=True)


@projects.command("update")
@click.argument("name")
@limit_options
@click.option("--prepaid/--postpaid", default=None, help="Whether requests draw down a prepaid balance.")
@click.pass_context
def projects_update(ctx: click.Context, /, name: str, prepaid: bool | None, **limits: str | None) -> None:
    """Change a project's limits; the running gateway applies them on the next request."""
    changes = limit_changes(limits)
    if prepaid is not None:
        changes["prepaid"] = int(prepaid)
    _save_project(ctx, name, changes, create=False)


def _save_project(ctx: click.Context, name: str, changes: dict[str, object], create: bool) -> None:
    store = _store(_config(ctx))
    try:
        record = store.save_project(name, changes, create)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    kind = "prepaid" if record.prepaid else "postpaid"
    click.echo(f"project {name}: {kind}, limits {describe(record.limits)}", err=True)


@projects.command("list")
@click.pass_context
def projects_list(ctx: click.Context) -> None:
    """Projects, their limits and balances."""
    store = _store(_config(ctx))
    records = store.list_projects()
    store.close()
    table = Table("project", "limits", "prepaid", "balance")
    for record in records:
        table.add_row(
            record.name, describe(record.limits), "yes" if record.prepaid else "no", nanos_to_usd(record.balance_nanos)
        )
    Console(width=160).print(table)


@main.group()
def balance() -> None:
    """A prepaid project's balance."""


@balance.command("add")
@click.argument("project")
@click.argument("usd")
@click.pass_context
def balance_add(ctx: click.Context, project: str, usd: str) -> None:
    """Add USD to a project's balance (negative to correct); prints the new balance."""
    config = _config(ctx)
    store = _store(config)
    try:
        total = add_balance(config, store, project, usd_to_nanos(usd))
    finally:
        store.close()
    click.echo(f"project {project}: balance {nanos_to_usd(total)}", err=True)
    click.echo(usd_text(total))


@keys.command("list")
@click.option("--project", default=None, help="Only this project's keys.")
@click.pass_context
def keys_list(ctx: click.Context, project: str | None) -> None:
    """List keys (ids, never secrets)."""
    store = _store(_config(ctx))
    records = store.list_keys(project)
    store.close()
    table = Table("id", "project", "name", "limits", "models", "expires", "created", "status")
    for record in records:
        status = "active" if record.active else f"revoked {record.revoked_at}"
        models = ",".join(record.allowed_models) if record.allowed_models is not None else "all"
        table.add_row(
            record.id,
            record.project,
            record.name or "",
            describe(record.limits),
            models,
            record.expires_at or "never",
            record.created_at,
            status,
        )
    Console(width=200).print(table)


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key; a running gateway refuses it from its next request."""
    store = _store(_config(ctx))
    revoked = store.revoke_key(key_id)
    store.close()
    if not revoked:
        raise click.ClickException(f"no active key {key_id!r}")
    click.echo(f"revoked key {key_id}", err=True)


def parse_since(text: str, now: float) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter("use a duration (30m, 24h, 7d, 2w) or a date (2026-11-01)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _usd(nanos: int) -> str:
    return f"${nanos / 1e9:,.6f}"


@main.command()
@click.option("--since", default="7d", show_default=True, help="A duration (30m, 24h, 7d, 2w) or a date.")
@click.option(
    "--by",
    type=click.Choice(["model", "key", "user", "tag", "day", "project", "provider"]),
    default="model",
    show_default=True,
)
@click.pass_context
def usage(ctx: click.Context, since: str, by: GroupBy) -> None:
    """Requests, tokens and cost from the ledger."""
    store = _store(_config(ctx))
    lines = store.usage(parse_since(since, time.time()), by)
    store.close()
    table = Table(
        by,
        "requests",
        "input",
        "output",
        "cache write",
        "cache read",
        "cost",
        "list cost",
        title=f"usage since {since}",
    )
    for line in lines:
        notes = []
        if line.unpriced:
            notes.append(f"{line.unpriced} unpriced")
        if line.estimated:
            notes.append(f"{line.estimated} estimated")
        table.add_row(
            line.group + (f" ({', '.join(notes)})" if notes else ""),
            f"{line.requests:,}",
            f"{line.input_tokens:,}",
            f"{line.output_tokens:,}",
            f"{line.cache_write_tokens:,}",
            f"{line.cache_read_tokens:,}",
            _usd(line.cost_nanos),
            _usd(line.list_cost_nanos),
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
