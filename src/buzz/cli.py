"""The `buzz` command: serve the gateway, manage keys and projects, read usage.

Output meant for scripts goes to stdout alone (a new key, a balance, nothing else); what is meant
for people goes to stderr. Every command takes `--config` and `--data-dir`, and names the
database it used, because a key made in one data directory is unknown to a gateway serving
another.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table

from buzz import cli_upstreams, cli_usage, console_tokens, reports
from buzz import config as config_module
from buzz import export as export_module
from buzz.changes import BalanceChange, KeyChanges, NewConsoleToken, NewKey, NewProject, ProjectChanges, rfc3339
from buzz.cli_limits import UNSET, describe, given, limit_options, typed
from buzz.config import Config, ConfigError
from buzz.money import usd_cents, usd_exact
from buzz.proxy.auth import generate_key
from buzz.store import open_store
from buzz.store.base import Store


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> object:
    if value is not None and param.name is not None:
        ctx.ensure_object(dict)[param.name] = value
    return value


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--config` and `--data-dir`, accepted by the group and by every command under it."""
    command = click.option(
        "--data-dir",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        expose_value=False,
        callback=_remember,
        help="Directory of the database (default: $BUZZ_DATA_DIR, else ./buzz-data).",
    )(command)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        expose_value=False,
        callback=_remember,
        help="TOML configuration file (default: $BUZZ_CONFIG, else none).",
    )(command)


def _config(ctx: click.Context, **flags: Any) -> Config:
    options = ctx.ensure_object(dict)
    try:
        return config_module.load(options.get("config_path"), flags={"data_dir": options.get("data_dir"), **flags})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _open(ctx: click.Context, create: bool = False) -> tuple[Config, Store]:
    """The configured store. Only commands that make something may create a database: the others
    say where they looked, rather than making an empty one in the wrong directory."""
    config = _config(ctx)
    if config.database_url:
        return config, open_store(config.database_path, config.database_url)
    path = config.database_path.resolve()
    if not path.exists():
        if not create:
            raise click.ClickException(
                f"no buzz database at {path}: pass --data-dir (or set BUZZ_DATA_DIR) to the gateway's data directory"
            )
        click.echo(
            f"note: no database at {path} yet, creating one; a gateway serving another data directory will not see it",
            err=True,
        )
    return config, open_store(path)


@click.group()
@common_options
@click.version_option(package_name="buzz")
def main() -> None:
    """buzz: a transparent LLM API gateway."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080).")
@click.option(
    "--workers",
    default=None,
    help="Processes serving the port (default 1; 'auto': one per core). More than one needs BUZZ_REDIS_URL.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve Prometheus metrics at /metrics on this port, without authentication (default: off).",
)
@common_options
@click.pass_context
def serve(
    ctx: click.Context, host: str | None, port: int | None, workers: str | None, metrics_port: int | None
) -> None:
    """Run the gateway (SQLite in the data directory, migrations applied at start).

    It prints where the data is and which vendors have a credential, then "listening" once the
    socket serves; an address it cannot listen on is a one-line error and exit status 1.
    """
    config = _config(ctx, host=host, port=port, workers=workers, metrics_port=metrics_port)
    from buzz.server import StartError, run  # the server stack is imported only when serving

    try:
        status = run(config)
    except StartError as exc:
        raise click.ClickException(str(exc)) from exc
    ctx.exit(status)


@main.group()
def keys() -> None:
    """Create, list, change and revoke buzz keys."""


def _key_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--models", default=None, help=f"Allowed models: ids or patterns, comma-separated ('{UNSET}': all)."
    )(command)
    command = click.option(
        "--expires",
        default=None,
        help=f"When the key stops working: ISO date or time, UTC if no offset ('{UNSET}': never).",
    )(command)
    command = limit_options(command)
    return click.option("--name", default=None, help="A label for people.")(command)


def _key_values(
    name: str | None, expires: str | None, models: str | None, limits: dict[str, str | None]
) -> dict[str, Any]:
    values: dict[str, Any] = given(limits)
    if name is not None:
        values["name"] = name
    if expires is not None:
        values["expires_at"] = None if expires.lower() == UNSET else _moment(expires)
    if models is not None:
        values["models"] = None if models.lower() == UNSET else [m.strip() for m in models.split(",") if m.strip()]
    return values


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(
            "an ISO date or time, e.g. 2027-01-31 or 2027-01-31T12:00:00Z", param_hint="--expires"
        ) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@keys.command("create")
@click.option("--project", required=True, help="Project the key bills to.")
@_key_options
@common_options
@click.pass_context
def keys_create(
    ctx: click.Context, /, project: str, name: str | None, expires: str | None, models: str | None, **limits: str | None
) -> None:
    """Print a new key on stdout (shown once; only its hash is stored)."""
    key = typed({**_key_values(name, expires, models, limits), "project": project}, NewKey)
    config, store = _open(ctx, create=True)
    new = generate_key()
    try:
        store.create_key(new.key_id, key.project, key.name or None, new.secret_hash, *key.stored())
    finally:
        store.close()
    where = "the PostgreSQL database" if config.database_url else config.database_path.resolve()
    click.echo(f"created key {new.key_id} for project {project!r} in {where}; it is shown once, store it now", err=True)
    click.echo(new.token)


@keys.command("update")
@click.argument("key_id")
@_key_options
@common_options
@click.pass_context
def keys_update(
    ctx: click.Context, /, key_id: str, name: str | None, expires: str | None, models: str | None, **limits: str | None
) -> None:
    """Change a key's limits, expiry or models; running gateways apply them on their next request."""
    changes = typed(_key_values(name, expires, models, limits), KeyChanges)
    _, store = _open(ctx)
    try:
        record = store.update_key(key_id, changes.columns())
    finally:
        store.close()
    if record is None:
        raise click.ClickException(f"no key {key_id!r}")
    click.echo(f"key {key_id}: limits {describe(record.limits)}", err=True)


@keys.command("list")
@click.option("--project", default=None, help="Only this project's keys.")
@common_options
@click.pass_context
def keys_list(ctx: click.Context, project: str | None) -> None:
    """List keys (ids, never secrets)."""
    _, store = _open(ctx)
    try:
        records = store.list_keys(project)
    finally:
        store.close()
    table = Table("id", "project", "name", "limits", "models", "expires", "created", "status")
    for record in records:
        status = "active" if record.active else f"revoked {record.revoked_at}"
        table.add_row(
            record.id,
            record.project,
            record.name or "",
            describe(record.limits),
            ",".join(record.allowed_models) if record.allowed_models is not None else "all",
            rfc3339(record.expires_at) if record.expires_at is not None else "never",
            record.created_at,
            status,
        )
    Console(width=200).print(table)


@keys.command("revoke")
@click.argument("key_id")
@common_options
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key; running gateways refuse it from their next request."""
    _, store = _open(ctx)
    try:
        revoked = store.revoke_key(key_id)
    finally:
        store.close()
    if not revoked:
        raise click.ClickException(f"no active key {key_id!r}")
    click.echo(f"revoked key {key_id}", err=True)


@main.group()
def projects() -> None:
    """Create and change projects: their limits and whether they are prepaid."""


@projects.command("create")
@click.argument("name")
@limit_options
@click.option("--prepaid/--postpaid", default=False, help="Whether requests draw down a prepaid balance.")
@common_options
@click.pass_context
def projects_create(ctx: click.Context, /, name: str, prepaid: bool, **limits: str | None) -> None:
    """Create a project (creating a key creates its project too)."""
    project = typed({**given(limits), "name": name, "prepaid": prepaid}, NewProject)
    _save_project(ctx, name, project.columns(), create=True)


@projects.command("update")
@click.argument("name")
@limit_options
@click.option("--prepaid/--postpaid", default=None, help="Whether requests draw down a prepaid balance.")
@common_options
@click.pass_context
def projects_update(ctx: click.Context, /, name: str, prepaid: bool | None, **limits: str | None) -> None:
    """Change a project's limits; running gateways apply them on their next request."""
    values: dict[str, Any] = given(limits)
    if prepaid is not None:
        values["prepaid"] = prepaid
    _save_project(ctx, name, typed(values, ProjectChanges).columns(), create=False)


def _save_project(ctx: click.Context, name: str, changes: dict[str, object], create: bool) -> None:
    _, store = _open(ctx, create=create)
    try:
        record = store.save_project(name, changes, create)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    kind = "prepaid" if record.prepaid else "postpaid"
    click.echo(f"project {name}: {kind}, limits {describe(record.limits)}", err=True)


@projects.command("list")
@common_options
@click.pass_context
def projects_list(ctx: click.Context) -> None:
    """Projects, their limits and balances."""
    _, store = _open(ctx)
    try:
        records = store.list_projects()
    finally:
        store.close()
    table = Table("project", "limits", "prepaid", "balance")
    for record in records:
        table.add_row(
            record.name, describe(record.limits), "yes" if record.prepaid else "no", usd_cents(record.balance_nanos)
        )
    Console(width=160).print(table)


@projects.group("token")
def projects_token() -> None:
    """Console tokens: how a project's members sign in to the console and read its export."""


@projects_token.command("create")
@click.argument("project")
@click.option("--name", default=None, help="A label for people: who or what the token is for.")
@common_options
@click.pass_context
def projects_token_create(ctx: click.Context, project: str, name: str | None) -> None:
    """Print a new console token for PROJECT on stdout (shown once; only its hash is stored)."""
    label = typed({"name": name}, NewConsoleToken).name
    _, store = _open(ctx)
    new = console_tokens.generate()
    try:
        store.create_console_token(new.token_id, project, label, new.secret_hash)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    click.echo(
        f"created console token {new.token_id} for project {project!r}; it is shown once, store it now", err=True
    )
    click.echo(new.token)


@projects_token.command("list")
@click.argument("project", required=False)
@common_options
@click.pass_context
def projects_token_list(ctx: click.Context, project: str | None) -> None:
    """Console tokens (ids, never secrets), of one project or all."""
    _, store = _open(ctx)
    try:
        records = store.list_console_tokens(project)
    finally:
        store.close()
    table = Table("id", "project", "name", "created", "status")
    for record in records:
        status = "active" if record.revoked_at is None else f"revoked {record.revoked_at}"
        table.add_row(record.id, record.project, record.name or "", record.created_at, status)
    Console(width=160).print(table)


@projects_token.command("revoke")
@click.argument("token_id")
@common_options
@click.pass_context
def projects_token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke a console token: its sessions end, and it opens nothing from then on."""
    _, store = _open(ctx)
    try:
        revoked = store.revoke_console_token(token_id)
    finally:
        store.close()
    if not revoked:
        raise click.ClickException(f"no active console token {token_id!r}")
    click.echo(f"revoked console token {token_id}", err=True)


@main.group()
def balance() -> None:
    """A prepaid project's balance."""


@balance.command("add")
@click.argument("project")
@click.argument("usd")
@common_options
@click.pass_context
def balance_add(ctx: click.Context, project: str, usd: str) -> None:
    """Add USD to a project's balance (negative to correct); prints the new balance."""
    nanos = typed({"usd": usd}, BalanceChange).nanos
    config, store = _open(ctx)
    try:
        if store.project(project) is None:
            raise click.ClickException(f"no project {project!r}")
        total = _add_balance(config, store, project, nanos)
    finally:
        store.close()
    click.echo(f"project {project}: balance {usd_cents(total)}", err=True)
    click.echo(usd_exact(total))


def _add_balance(config: Config, store: Store, project: str, nanos: int) -> int:
    """Where the running gateways read balances: Redis when they share one, else the store."""
    if not config.redis_url:
        return store.add_balance(project, nanos)
    from buzz.limits.redis import RedisLimiter

    async def top_up(url: str) -> int:
        limiter = RedisLimiter(url)
        try:
            return await limiter.add_balance(project, nanos)
        finally:
            await limiter.close()

    return asyncio.run(top_up(config.redis_url))


def _report_params(since: str, until: str | None, tz: str, project: str | None) -> dict[str, str]:
    params = {"range": "custom", "since": since, "tz": tz}
    if until:
        params["until"] = until
    if project:
        params["project"] = project
    return params


@main.command()
@click.option("--since", default="7d", show_default=True, help="A duration back from now (30m, 24h, 7d, 2w) or a date.")
@click.option("--until", default=None, help="The range's end (default: now).")
@click.option(
    "--by",
    default="model",
    show_default=True,
    help="model, provider, key, user, project, surface, status, tag (whole tags), tag:<key> "
    "(the values of one tag key, as tag:feature), or day.",
)
@click.option("--tz", default="UTC", show_default=True, help="Time zone of days and of --since dates (IANA name).")
@click.option("--project", default=None, help="One project only.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON, as GET /admin/api/usage gives it.")
@common_options
@click.pass_context
def usage(
    ctx: click.Context, since: str, until: str | None, by: str, tz: str, project: str | None, as_json: bool
) -> None:
    """Requests, tokens and cost, from the ledger's rollups."""
    params = _report_params(since, until, tz, project)
    params.update({"by": "none", "bucket": "day"} if by == "day" else {"by": by})
    try:
        query = reports.parse_query(params, time.time(), None)
    except reports.InvalidQuery as exc:
        raise click.BadParameter(str(exc)) from None
    _, store = _open(ctx)
    try:
        report = reports.usage_report(store, query)
    finally:
        store.close()
    if as_json:
        click.echo(msgspec.json.encode(reports.report_json(report)).decode())
        return
    Console(width=160).print(cli_usage.table(report, by, f"usage since {since}"))


@main.command()
@click.option("--since", required=True, help="A duration back from now (30m, 24h, 7d, 2w), a date or RFC 3339.")
@click.option("--until", default=None, help="The range's end (default: now).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--tz", default="UTC", show_default=True, help="Time zone of the rows' times (IANA name).")
@click.option("--project", default=None, help="One project only.")
@click.option("--cursor", default=None, help="Resume after the row with this cursor (the last one received).")
@common_options
@click.pass_context
def export(
    ctx: click.Context, since: str, until: str | None, fmt: str, tz: str, project: str | None, cursor: str | None
) -> None:
    """Every ledger row of a range, oldest first, to stdout: CSV with a header, or JSON lines."""
    params = {**_report_params(since, until, tz, project), "format": fmt}
    if cursor:
        params["cursor"] = cursor
    try:
        query = export_module.parse_export(params, time.time(), None)
    except reports.InvalidQuery as exc:
        raise click.BadParameter(str(exc)) from None
    _, store = _open(ctx)
    out = sys.stdout.buffer
    try:
        for piece in export_module.lines(store, query):
            out.write(piece)
        out.flush()
    except BrokenPipeError:  # `buzz export ... | head`: the reader has what it wanted
        sys.stderr.close()
    finally:
        store.close()


@main.command()
@click.option("--url", default=None, help="The gateway's address (default: http://HOST:PORT of the configuration).")
@click.option("--json", "as_json", is_flag=True, help="The document as GET /admin/api/upstreams gives it.")
@click.option(
    "--restore",
    "restore",
    metavar="VENDOR/NAME",
    default=None,
    help="First put this credential back in rotation (a key replaced, an account topped up).",
)
@common_options
@click.pass_context
def upstreams(ctx: click.Context, url: str | None, as_json: bool, restore: str | None) -> None:
    """The running gateway's vendor credentials: which are in rotation, which are held or disabled
    and why, with their requests in flight, rate-limit headroom and cooldowns.

    Asks the gateway (its state lives in memory) with the operator token, BUZZ_ADMIN_TOKEN.
    """
    config = _config(ctx)
    address = url or cli_upstreams.gateway_url(config)
    if restore is not None:
        vendor, _, name = restore.partition("/")
        if not vendor or not name:
            raise click.BadParameter("give it as VENDOR/NAME, e.g. anthropic/acct-a", param_hint="--restore")
        cli_upstreams.fetch(address, config.admin_token, f"/{vendor}/{name}/restore")
        click.echo(f"{vendor}/{name} is back in rotation", err=True)
    body = cli_upstreams.fetch(address, config.admin_token)
    if as_json:
        click.echo(body.decode())
        return
    credentials = msgspec.json.decode(body)["data"]
    if not credentials:
        click.echo(f"the gateway at {address} has no vendor credential configured", err=True)
        return
    Console(width=200).print(cli_upstreams.table(credentials, time.time()))


if __name__ == "__main__":
    sys.exit(main())
