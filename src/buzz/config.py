"""One frozen configuration, loaded as defaults < file < environment < flags.

Every setting is declared once in `SETTINGS`, with its place in the TOML file and its
environment variable, so the file format, the environment and the README table cannot drift
apart. Unknown keys in the file are fatal: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from buzz import providers
from buzz.forwarded import parse_networks

# Every vendor buzz knows; what it knows of each is in `buzz.providers`.
PROVIDERS = providers.NAMES
_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


# The most of one answer the meter keeps to read usage from (a JSON body, one SSE event). Big
# enough for a Responses API `response.completed` event repeating a long answer, or a Gemini body
# with an inline image; small enough that hundreds of answers at once fit in memory.
METER_MAX_BYTES = 4 * 1024 * 1024


class ConfigError(ValueError):
    """A configuration value or key that buzz cannot accept."""


@dataclass(frozen=True, slots=True)
class CredentialConfig:
    """One upstream account's key in a vendor's pool. `name` is what the ledger, the console and
    /metrics show; the key itself is never shown."""

    name: str
    api_key: str
    base_url: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    base_url: str
    # The pool, in the order configured: the first also serves the routes bound to one upstream
    # account (files, batches, model lists). Empty: the vendor is not configured.
    credentials: tuple[CredentialConfig, ...] = ()
    # The vendor's key variable replaced a pool the file configured (the environment wins over
    # the file): startup warns, since that is rarely meant.
    pool_overridden: bool = False

    @property
    def api_key(self) -> str | None:
        """The first credential's key (None: not configured)."""
        return self.credentials[0].api_key if self.credentials else None


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """Buzz's own rates for one model (USD per million tokens), or a discount of its own.

    Absolute rates replace the discounted list rate field by field (flat across tiers); an
    absolute `input` also sets the cache rates left unset, by the model's own list multipliers;
    `discount` replaces the book's discount for the fields left unset.
    """

    input: Decimal | None = None
    output: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    cache_read: Decimal | None = None
    discount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data_dir: Path = Path("./buzz-data")
    database_url: str | None = None  # PostgreSQL; None: the SQLite file in data_dir
    max_body_bytes: int = 32 * 1024 * 1024
    # Files and batches stream through (never held whole), so their limit is the vendors' own.
    max_upload_bytes: int = 512 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    shutdown_timeout: float = 30.0
    probe_interval: float = 30.0
    discount: Decimal = Decimal("0")
    # How long a row waits on the event loop before the writer thread has it (and spools it):
    # what a SIGKILL can lose. The store itself is written at its own pace (Store.write_every).
    ledger_flush_interval: float = 0.01
    ledger_retention_days: int | None = None  # None: raw ledger rows are kept forever
    # The raw ledger rows one console or usage-API report may walk (a question no rollup holds):
    # past it the report is refused with a message that says how to narrow it, rather than hold
    # a server thread, and a core the gateway needs, for seconds. Raw reads walk 0.65 to 0.9
    # million rows a second on the machine of docs/performance.md, so this is under a second
    # there. `buzz usage` has no bound.
    report_raw_rows_limit: int = 500_000
    log_level: str = "info"
    header_timeout: float = 10.0
    keep_alive_timeout: int = 75
    max_connections: int = 0  # 0: worked out from the process's file descriptor limit
    metrics_port: int = 0  # 0: no /metrics
    access_log: str = "text"
    providers: Mapping[str, ProviderConfig] = field(
        default_factory=lambda: {p.name: ProviderConfig(p.default_base_url) for p in providers.REGISTRY}
    )
    price_overrides: Mapping[str, PriceOverride] = field(default_factory=dict)
    add_include_usage: bool = False
    meter_max_bytes: int = METER_MAX_BYTES
    redis_url: str | None = None
    admin_token: str | None = None
    public_url: str | None = None
    limits_fail_open: bool = False
    output_reserve: int | None = None
    trusted_proxies: tuple[str, ...] = ()
    routing_models: Mapping[str, str] = field(default_factory=dict)
    routing_patterns: Mapping[str, str] = field(default_factory=dict)
    console: bool = True
    console_session_lifetime: int = 8 * 3600

    @property
    def database_path(self) -> Path:
        return self.data_dir / "buzz.sqlite3"

    @property
    def spool_dir(self) -> Path:
        """Where ledger rows wait for the store (buzz.billing.spool)."""
        return self.data_dir / "spool"

    def provider(self, name: str) -> ProviderConfig:
        return self.providers[name]


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def _workers(value: Any) -> int:
    """A count of processes, or "auto": one per core this process may run on."""
    if str(value).strip().lower() == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return _positive_int(value)


def _database_url(value: Any) -> str:
    text = str(value).strip()
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    return text


def _port(value: Any) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be a TCP port")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError("must be a decimal number") from exc


def _discount(value: Any) -> Decimal:
    number = _decimal(value)
    if not Decimal(0) <= number < Decimal(1):
        raise ValueError("must be at least 0 and below 1 (0.2 means 20% below list price)")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _networks(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    entries = tuple(str(item).strip() for item in items if str(item).strip())
    parse_networks(entries)  # refuse a bad entry at start, not on a request
    return entries


def _non_negative_int(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def _access_log(value: Any) -> str:
    text = str(value).lower()
    if text not in {"text", "json", "off"}:
        raise ValueError("must be text, json or off")
    return text


def _level(value: Any) -> str:
    text = str(value).lower()
    if text not in {"debug", "info", "warning", "error"}:
        raise ValueError("must be debug, info, warning or error")
    return text


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # Config field
    file_key: tuple[str, str]  # (TOML table, key)
    env: str
    parse: Callable[[Any], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("host", ("server", "host"), "BUZZ_HOST", str, "Address to listen on."),
    Setting("port", ("server", "port"), "BUZZ_PORT", _port, "Port to listen on."),
    Setting(
        "workers",
        ("server", "workers"),
        "BUZZ_WORKERS",
        _workers,
        "Processes serving the port, each with its own ledger writer; `auto` is one per core. More than "
        "one needs `limits.redis_url`, so that every limit is held once for all of them.",
    ),
    Setting("data_dir", ("server", "data_dir"), "BUZZ_DATA_DIR", Path, "Directory of the SQLite database."),
    Setting(
        "database_url",
        ("server", "database_url"),
        "BUZZ_DATABASE_URL",
        _database_url,
        "PostgreSQL for keys, projects, console tokens and the ledger, shared by every buzz process on "
        "every host (postgresql://user@host/db). Needs `limits.redis_url`. Default: SQLite in data_dir.",
    ),
    Setting(
        "max_body_bytes",
        ("server", "max_body_bytes"),
        "BUZZ_MAX_BODY_BYTES",
        _positive_int,
        "Largest request body accepted (413 above it) on the routes buzz reads: messages, chat, "
        "responses, embeddings, Gemini.",
    ),
    Setting(
        "max_upload_bytes",
        ("server", "max_upload_bytes"),
        "BUZZ_MAX_UPLOAD_BYTES",
        _positive_int,
        "Largest request body on every other route (files, batches, images, audio), which streams "
        "upstream as it arrives (413 above it).",
    ),
    Setting(
        "shutdown_timeout",
        ("server", "shutdown_timeout"),
        "BUZZ_SHUTDOWN_TIMEOUT",
        _positive_float,
        "Seconds a graceful shutdown waits for open requests.",
    ),
    Setting(
        "probe_interval",
        ("upstreams", "probe_interval"),
        "BUZZ_UPSTREAMS_PROBE_INTERVAL",
        _positive_float,
        "Seconds between probes of a disabled upstream credential (a GET of the vendor's model list "
        "with its key); the first comes as soon as it is disabled.",
    ),
    Setting("log_level", ("server", "log_level"), "BUZZ_LOG_LEVEL", _level, "debug, info, warning or error."),
    Setting(
        "access_log",
        ("server", "access_log"),
        "BUZZ_ACCESS_LOG",
        _access_log,
        "One line per request on stderr: text, json (one object a line) or off.",
    ),
    Setting(
        "header_timeout",
        ("server", "header_timeout"),
        "BUZZ_HEADER_TIMEOUT",
        _positive_float,
        "Seconds a client has to send a whole request head, from connecting or from its first byte.",
    ),
    Setting(
        "keep_alive_timeout",
        ("server", "keep_alive_timeout"),
        "BUZZ_KEEP_ALIVE_TIMEOUT",
        _positive_int,
        "Whole seconds an idle keep-alive connection is kept open between requests.",
    ),
    Setting(
        "max_connections",
        ("server", "max_connections"),
        "BUZZ_MAX_CONNECTIONS",
        _non_negative_int,
        "Most client connections at once (0: from the file descriptor limit, leaving room for upstreams).",
    ),
    Setting(
        "metrics_port",
        ("server", "metrics_port"),
        "BUZZ_METRICS_PORT",
        _port,
        "Port on `host` serving Prometheus metrics at /metrics, without authentication: expose it to the "
        "scraper only (0 or unset: off).",
    ),
    Setting(
        "connect_timeout",
        ("upstream", "connect_timeout"),
        "BUZZ_CONNECT_TIMEOUT",
        _positive_float,
        "Seconds to open a connection to an upstream (504 after).",
    ),
    Setting(
        "read_timeout",
        ("upstream", "read_timeout"),
        "BUZZ_READ_TIMEOUT",
        _positive_float,
        "Seconds an upstream may stay silent, before its headers or between chunks (504 after).",
    ),
    Setting(
        "discount",
        ("pricing", "discount"),
        "BUZZ_DISCOUNT",
        _discount,
        "Buzz's rate as a discount on the list price (0.2 = 20% below).",
    ),
    Setting(
        "add_include_usage",
        ("metering", "add_include_usage"),
        "BUZZ_ADD_INCLUDE_USAGE",
        _bool,
        "Add stream_options.include_usage to streamed chat requests that lack it (the one body change buzz can make).",
    ),
    Setting(
        "meter_max_bytes",
        ("metering", "max_bytes"),
        "BUZZ_METER_MAX_BYTES",
        _positive_int,
        "Most of one answer the meter keeps to read usage: a JSON body, or one SSE event (estimate above it).",
    ),
    Setting(
        "redis_url",
        ("limits", "redis_url"),
        "BUZZ_REDIS_URL",
        str,
        "Redis for limits, budgets and balances shared by several buzz processes (default: in-process).",
    ),
    Setting(
        "limits_fail_open",
        ("limits", "fail_open"),
        "BUZZ_LIMITS_FAIL_OPEN",
        _bool,
        "Admit requests unchecked when Redis is unreachable, instead of answering 503.",
    ),
    Setting(
        "output_reserve",
        ("limits", "output_reserve"),
        "BUZZ_OUTPUT_RESERVE",
        _positive_int,
        "Output tokens a request without max_tokens counts as its worst case against spend caps and balances"
        " (default: the model's context window).",
    ),
    Setting(
        "public_url",
        ("server", "public_url"),
        "BUZZ_PUBLIC_URL",
        lambda value: str(value).rstrip("/"),
        "The gateway's address as clients reach it, written into /sh/claudecode.sh (default: the request's own).",
    ),
    Setting(
        "trusted_proxies",
        ("server", "trusted_proxies"),
        "BUZZ_TRUSTED_PROXIES",
        _networks,
        "Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto/-Host buzz believes (comma-separated).",
    ),
    Setting(
        "admin_token",
        ("admin", "token"),
        "BUZZ_ADMIN_TOKEN",
        str,
        "Operator token for the admin API under /admin/api/ (Bearer); unset, the admin API is off.",
    ),
    Setting(
        "console",
        ("console", "enabled"),
        "BUZZ_CONSOLE",
        _bool,
        "Serve the web console under /console/ (sign-in with the operator token or a project console token).",
    ),
    Setting(
        "console_session_lifetime",
        ("console", "session_lifetime"),
        "BUZZ_CONSOLE_SESSION_LIFETIME",
        _positive_int,
        "Seconds a console session lasts from sign-in; then its cookie is refused and the user signs in again.",
    ),
    Setting(
        "ledger_flush_interval",
        ("ledger", "flush_interval"),
        "BUZZ_LEDGER_FLUSH_INTERVAL",
        _positive_float,
        "Longest a ledger row waits before the writer thread spools it (and what a SIGKILL can lose).",
    ),
    Setting(
        "ledger_retention_days",
        ("ledger", "retention_days"),
        "BUZZ_LEDGER_RETENTION_DAYS",
        _positive_int,
        "Days raw ledger rows are kept; older ones are deleted in chunks, and the rollups keep their sums. "
        "Unset: kept forever.",
    ),
    Setting(
        "report_raw_rows_limit",
        ("reports", "raw_rows_limit"),
        "BUZZ_REPORTS_RAW_ROWS_LIMIT",
        _positive_int,
        "Raw ledger rows one console or usage-API report may read when no rollup holds its question "
        "(a user or tag split narrowed by another dimension); past it the report is refused with a "
        "message that says how to narrow it.",
    ),
)

_PROVIDER_KEYS = {"base_url", "api_key", "credentials"}
_CREDENTIAL_KEYS = {"name", "api_key", "base_url", "weight"}
# The one credential of a vendor configured with a single key (its variable or `api_key`).
DEFAULT_CREDENTIAL = "default"
_OVERRIDE_KEYS = {f.name for f in fields(PriceOverride)}


def load(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration; `path` None means `BUZZ_CONFIG` or no file."""
    env = os.environ if env is None else env
    if path is None and env.get("BUZZ_CONFIG"):
        path = Path(env["BUZZ_CONFIG"])
    document = _read_file(path) if path is not None else {}
    values: dict[str, Any] = {}
    tables = {s.file_key[0] for s in SETTINGS} | {"providers", "pricing", "routing"}
    for table in document:
        if table not in tables:
            raise ConfigError(f"unknown table [{table}] in {path}")
    for setting in SETTINGS:
        table, key = setting.file_key
        section = document.get(table, {})
        if key in section:
            values[setting.name] = _parse(setting, section[key], f"{table}.{key} in {path}")
        if env.get(setting.env):
            values[setting.name] = _parse(setting, env[setting.env], setting.env)
    for table, section in document.items():
        known = {s.file_key[1] for s in SETTINGS if s.file_key[0] == table}
        if table == "pricing":
            known.add("models")
        if table in ("providers", "routing"):
            continue
        for key in section:
            if key not in known:
                raise ConfigError(f"unknown key {table}.{key} in {path}")
    values["providers"] = _providers(document.get("providers", {}), env, path)
    values["price_overrides"] = _overrides(document.get("pricing", {}).get("models", {}), path)
    values["routing_models"], values["routing_patterns"] = _routing(document.get("routing", {}), path)
    by_name = {setting.name: setting for setting in SETTINGS}
    for name, value in (flags or {}).items():
        if value is not None:
            flagged = by_name.get(name)
            values[name] = _parse(flagged, value, f"--{name}") if flagged is not None else value
    return replace(Config(), **values)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _parse(setting: Setting, raw: Any, where: str) -> Any:
    try:
        return setting.parse(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {raw!r} is not valid: {exc}") from exc


def _providers(section: Mapping[str, Any], env: Mapping[str, str], path: Path | None) -> dict[str, ProviderConfig]:
    result = {}
    for name in section:
        if name not in PROVIDERS:
            raise ConfigError(f"unknown provider [providers.{name}] in {path}; known: {', '.join(PROVIDERS)}")
    for provider in providers.REGISTRY:
        name = provider.name
        table = section.get(name, {})
        for key in table:
            if key not in _PROVIDER_KEYS:
                raise ConfigError(f"unknown key providers.{name}.{key} in {path}")
        base_url = str(env.get(provider.base_url_env) or table.get("base_url") or provider.default_base_url).rstrip("/")
        where = f"providers.{name}"
        api_key = env.get(provider.credential_env) or None
        credentials: tuple[CredentialConfig, ...]
        if api_key is not None:  # the environment wins over the file, as for every setting
            credentials = (CredentialConfig(DEFAULT_CREDENTIAL, api_key, base_url),)
        elif "credentials" in table:
            if "api_key" in table:
                raise ConfigError(f"{where} in {path}: give either api_key or [[{where}.credentials]], not both")
            credentials = _credentials(table["credentials"], base_url, f"{where}.credentials in {path}")
        elif table.get("api_key"):
            credentials = (CredentialConfig(DEFAULT_CREDENTIAL, str(table["api_key"]), base_url),)
        else:
            credentials = ()
        overridden = api_key is not None and "credentials" in table
        result[name] = ProviderConfig(base_url, credentials, overridden)
    return result


def _credentials(entries: Any, base_url: str, where: str) -> tuple[CredentialConfig, ...]:
    """`[[providers.<vendor>.credentials]]`: a name, a key, and optionally a base URL and a weight."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: must be a non-empty array of tables")
    result: list[CredentialConfig] = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: entry {number} must be a table")
        if unknown := set(entry) - _CREDENTIAL_KEYS:
            raise ConfigError(f"{where}: entry {number}: unknown key {sorted(unknown)[0]}")
        name, api_key, weight = entry.get("name"), entry.get("api_key"), entry.get("weight", 1)
        # The name becomes a ledger value and a metric label: a short identifier, unique in the pool.
        if not isinstance(name, str) or not _CREDENTIAL_NAME.fullmatch(name):
            raise ConfigError(f"{where}: entry {number}: name must be 1-64 letters, digits, '.', '-' or '_'")
        if any(other.name == name for other in result):
            raise ConfigError(f"{where}: the name {name!r} is used twice")
        if not isinstance(api_key, str) or not api_key:
            raise ConfigError(f"{where}: entry {name!r}: api_key is required")
        if type(weight) is not int or not 1 <= weight <= 1000:
            raise ConfigError(f"{where}: entry {name!r}: weight must be a whole number from 1 to 1000")
        own_url = entry.get("base_url", base_url)
        if not isinstance(own_url, str) or not own_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: entry {name!r}: base_url must be an http(s) URL")
        result.append(CredentialConfig(name, api_key, own_url.rstrip("/"), weight))
    return tuple(result)


def _routing(section: Mapping[str, Any], path: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """`[routing] models = {"my-ft" = "openai"}`, `patterns = {"llama-*" = "xai"}`."""
    unknown = set(section) - {"models", "patterns"}
    if unknown:
        raise ConfigError(f"unknown key routing.{sorted(unknown)[0]} in {path}")
    result: list[dict[str, str]] = []
    for key in ("models", "patterns"):
        table = section.get(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"routing.{key} in {path} must be a table of id -> provider")
        for name, provider in table.items():
            if provider not in PROVIDERS:
                raise ConfigError(f"routing.{key}.{name} in {path}: unknown provider {provider!r}")
        result.append({str(name): str(provider) for name, provider in table.items()})
    return result[0], result[1]


def _overrides(section: Mapping[str, Any], path: Path | None) -> dict[str, PriceOverride]:
    result = {}
    for model, table in section.items():
        unknown = set(table) - _OVERRIDE_KEYS
        if unknown:
            raise ConfigError(f"unknown key pricing.models.{model}.{sorted(unknown)[0]} in {path}")
        try:
            parsed = {key: _decimal(value) for key, value in table.items()}
            if "discount" in parsed:
                parsed["discount"] = _discount(parsed["discount"])
        except ValueError as exc:
            raise ConfigError(f"pricing.models.{model} in {path}: {exc}") from exc
        result[model] = PriceOverride(**parsed)
    return result
