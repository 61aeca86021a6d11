"""Keys, projects and console tokens as rows: the columns both stores select and the records
they become, so that every backend hands back the same records."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from buzz.billing.ledger import LedgerRow
from buzz.limits.base import Limits
from buzz.store.base import BatchRecord, KeyRecord, ProjectRecord

LIMIT_COLUMNS = ("rpm", "itpm", "otpm", "concurrency", "daily_nanos", "monthly_nanos")
KEY_SELECT = (
    "SELECT id, project, name, secret_hash, created_at, revoked_at, rpm, itpm, otpm, concurrency, "
    "daily_nanos, monthly_nanos, expires_unix, allowed_models FROM keys"
)
PROJECT_SELECT = (
    "SELECT name, rpm, itpm, otpm, concurrency, daily_nanos, monthly_nanos, prepaid, balance_nanos, created_at "
    "FROM projects"
)
NO_LIMITS = Limits()
CONSOLE_SELECT = "SELECT id, project, name, secret_hash, created_at, revoked_at FROM console_tokens"
# Columns an update may set, each a fixed name: the SQL is built only from these.
KEY_CHANGES = frozenset({*LIMIT_COLUMNS, "expires_unix", "allowed_models", "name"})
PROJECT_CHANGES = frozenset({*LIMIT_COLUMNS, "prepaid"})


def key_record(row: tuple[Any, ...]) -> KeyRecord:
    models = row[13]
    key_id, project, name, secret_hash, created_at, revoked_at = row[:6]
    return KeyRecord(
        id=key_id,
        project=project,
        name=name,
        secret_hash=secret_hash,
        created_at=created_at,
        revoked_at=revoked_at,
        limits=Limits(*row[6:12]),
        expires_at=row[12],
        allowed_models=tuple(msgspec.json.decode(models)) if isinstance(models, str) else None,
    )


def project_record(row: tuple[Any, ...]) -> ProjectRecord:
    return ProjectRecord(row[0], Limits(*row[1:7]), bool(row[7]), row[8], row[9])


def limit_values(limits: Limits) -> tuple[int | None, ...]:
    return tuple(getattr(limits, name) for name in LIMIT_COLUMNS)


def models_json(models: Sequence[str] | None) -> str | None:
    """A key's model allow-list as stored: a JSON array, or NULL for every model."""
    return None if models is None else msgspec.json.encode(list(models)).decode()


def checked_changes(changes: dict[str, object], allowed: frozenset[str]) -> list[str]:
    """The names of the columns `changes` sets, sorted; ValueError naming one it may not."""
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)[0]}")
    return sorted(changes)


class PendingBalances:
    """Prepaid balances as the in-process limiter sees them: the database's figure plus the
    changes not yet written.

    The limiter changes a balance twice a request (reserve, settle); writing each change on the
    event loop cost more than the rest of the limiter together. Changes are kept here and written
    by the ledger writer, in the same transaction as the ledger rows they belong to.
    """

    def __init__(self, stored: Callable[[str], int]) -> None:
        self._stored = stored  # the balance as the database has it
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # not yet taken by the writer
        self._writing: dict[str, int] = {}  # taken by the writer, not yet committed

    def get(self, project: str) -> int:
        stored = self._stored(project)
        with self._lock:
            unwritten = self._pending.get(project, 0) + self._writing.get(project, 0)
        return stored + unwritten

    def add(self, project: str, delta: int) -> None:
        with self._lock:
            self._pending[project] = self._pending.get(project, 0) + delta

    def take(self) -> dict[str, int]:
        """For the writer: the changes to write now (they still count in `get` until committed)."""
        with self._lock:
            for project, delta in self._pending.items():
                self._writing[project] = self._writing.get(project, 0) + delta
            self._pending = {}
            return dict(self._writing)

    def committed(self) -> None:
        with self._lock:
            self._writing = {}


# The ledger's columns, in the order both stores write them.
LEDGER_COLUMNS = (
    "id",
    "ts",
    "key_id",
    "project",
    "user_id",
    "tags",
    "surface",
    "provider",
    "model",
    "status",
    "error_type",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "cost_nanos",
    "list_cost_nanos",
    "price_version",
    "usage_source",
    "latency_ms",
    "ttfb_ms",
    "upstream_request_id",
    "usage_note",
    "credential",
)


def ledger_values(row: LedgerRow, ts: object, tags: object) -> tuple[Any, ...]:
    """A row's values in LEDGER_COLUMNS' order, its time and tags as the store keeps them."""
    return (
        row.id,
        ts,
        row.key_id,
        row.project,
        row.user_id,
        tags,
        row.surface,
        row.provider,
        row.model,
        row.status,
        row.error_type,
        row.input_tokens,
        row.output_tokens,
        row.cache_write_5m_tokens,
        row.cache_write_1h_tokens,
        row.cache_read_tokens,
        row.cost_nanos,
        row.list_cost_nanos,
        row.price_version,
        row.usage_source,
        round(row.latency_ms, 3),
        None if row.ttfb_ms is None else round(row.ttfb_ms, 3),
        row.upstream_request_id,
        row.usage_note,
        row.credential,
    )


BATCH_SELECT = "SELECT id, provider, key_id, project, user_id, tags, created FROM batches"


def batch_values(batch: BatchRecord) -> tuple[Any, ...]:
    """A batch's values in BATCH_SELECT's order, its tags as a JSON array."""
    return (batch.id, batch.provider, batch.key_id, batch.project, batch.user_id, json.dumps(batch.tags), batch.created)


def batch_record(row: Sequence[Any]) -> BatchRecord:
    ident, provider, key_id, project, user_id, tags, created = row
    return BatchRecord(ident, provider, key_id, project, user_id, tuple(json.loads(tags)), float(created))
