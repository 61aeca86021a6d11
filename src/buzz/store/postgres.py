"""The scaled-out store: keys, projects, console tokens, the ledger and its rollups in PostgreSQL,
shared by every buzz process on every host (BUZZ_DATABASE_URL=postgresql://…).

Connections, each with one job:
- one for lookups and operators' changes (the request path reaches it only on a key-cache miss,
  through a thread, so a slow database never stalls the event loop);
- one for the ledger writer's thread;
- one listening for changes (`LISTEN buzz`), so a key revoked on any process is refused by
  every process as soon as the notification lands, well within a second;
- one per report or export, opened for it and closed after.
A connection that broke is replaced on its next use; while the database is away, operations
raise `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal
from urllib.parse import urlsplit

import psycopg
from psycopg import errors

from buzz.billing.ledger import LedgerRow
from buzz.limits.base import Limits, ScopeKind
from buzz.store import plan
from buzz.store import postgres_ledger as ledger
from buzz.store import postgres_reports as reports
from buzz.store.base import (
    BatchRecord,
    Bucketing,
    ConsoleTokenRecord,
    Dimension,
    Filters,
    KeyRecord,
    ProjectRecord,
    RollupLine,
    StoreUnavailable,
)
from buzz.store.lines import OffsetTimes, render
from buzz.store.records import (
    BATCH_SELECT,
    CONSOLE_SELECT,
    KEY_CHANGES,
    KEY_SELECT,
    NO_LIMITS,
    PROJECT_CHANGES,
    PROJECT_SELECT,
    PendingBalances,
    batch_record,
    batch_values,
    checked_changes,
    key_record,
    limit_values,
    models_json,
    project_record,
)
from buzz.store.timetext import iso

log = logging.getLogger("buzz.store")

CHANNEL = "buzz"
_CONNECT_TIMEOUT = 5  # seconds: an unreachable host fails a lookup within this, never hangs it
# Held while migrating and while adding a month's partition: several processes start at once.
_MIGRATION_LOCK = "SELECT pg_advisory_lock(hashtext('buzz-migrations:' || current_schema()))"
_MIGRATION_UNLOCK = "SELECT pg_advisory_unlock(hashtext('buzz-migrations:' || current_schema()))"


class PostgresStore:
    # Each write runs eight statements whatever its size: written every 50 ms, that fixed cost was
    # most of PostgreSQL's CPU per row under the benchmark's load (docs/performance.md).
    write_every = 0.25

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()  # the lookup connection, for threads and the event loop
        self._conn: psycopg.Connection[Any] | None = None
        self._writer: psycopg.Connection[Any] | None = None
        self._writer_lock = threading.Lock()
        self._months: set[tuple[int, int]] = set()  # partitions known to exist
        self._migrate()
        with self._session() as conn:
            (self._schema,) = _one(conn.execute("SELECT current_schema()"))
        self._balances = PendingBalances(self._balance)
        # Moved by the listener on every change it hears of, and when it (re)connects, since
        # changes made while it was away were not heard.
        self._version = 0
        self._stopping = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="buzz-store-listen", daemon=True)
        self._listener.start()

    # --- connections ----------------------------------------------------------------------

    def _unreachable(self, exc: Exception) -> StoreUnavailable:
        # The host and database only: the URL may carry a password, the error's text a query.
        where = urlsplit(self._url)
        return StoreUnavailable(f"PostgreSQL at {where.hostname}{where.path} unreachable ({type(exc).__name__})")

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        """The lookup connection, reopened if it broke; StoreUnavailable while the database is away."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                yield self._conn
            except psycopg.OperationalError as exc:
                raise self._unreachable(exc) from exc

    def _read_one(self, sql: str, args: tuple[Any, ...]) -> Any:
        """One row of a read on the lookup connection, tried once more on a new connection when
        the one it had died unnoticed (while the database was away, every key came from the
        cache): a read is safe to repeat, and the request path must not get a 503 for it."""
        with self._lock:
            for attempt in range(2):
                fresh = self._conn is None or self._conn.closed
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = self._connect()
                    return self._conn.execute(sql, args).fetchone()
                except psycopg.OperationalError as exc:
                    if fresh or attempt:
                        raise self._unreachable(exc) from exc
            raise AssertionError("unreachable")

    @contextmanager
    def _reader(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of its own for a report or an export, so a long read holds nothing else up."""
        try:
            with self._connect() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from exc

    def _migrate(self) -> None:
        """Apply the migrations not yet applied, one transaction each, under an advisory lock:
        of several processes starting at once, one migrates and the others then find it done."""
        with self._reader() as conn:
            conn.execute(_MIGRATION_LOCK)
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
                folder = resources.files("buzz.store") / "migrations" / "postgres"
                for script in sorted(folder.iterdir(), key=lambda p: p.name):
                    if not script.name.endswith(".sql") or script.name in applied:
                        continue
                    with conn.transaction():
                        conn.execute(script.read_text().encode())
                        conn.execute(
                            "INSERT INTO schema_migrations VALUES (%s, %s)",
                            (script.name, iso(datetime.now(UTC).timestamp())),
                        )
            finally:
                conn.execute(_MIGRATION_UNLOCK)

    # --- changes from other processes -------------------------------------------------------

    def keys_version(self) -> int:
        return self._version

    def _listen(self) -> None:
        pause = 0.1
        listening = False
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._version += 1
                    listening = True
                    pause = 0.1
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if note.payload == self._schema:
                                self._version += 1
            except psycopg.Error as exc:
                if listening:
                    log.warning("store: change notifications lost (%s); reconnecting", type(exc).__name__)
                listening = False
                self._stopping.wait(pause)
                pause = min(pause * 2, 2.0)

    # --- keys -----------------------------------------------------------------------------

    async def find_key(self, key_id: str) -> KeyRecord | None:
        return await asyncio.to_thread(self._find_key, key_id)

    def _find_key(self, key_id: str) -> KeyRecord | None:
        row = self._read_one(f"{KEY_SELECT} WHERE id = %s", (key_id,))
        return key_record(row) if row else None

    async def find_project(self, name: str) -> ProjectRecord | None:
        return await asyncio.to_thread(self.project, name)

    def project(self, name: str) -> ProjectRecord | None:
        row = self._read_one(f"{PROJECT_SELECT} WHERE name = %s", (name,))
        return project_record(row) if row else None

    def create_key(
        self,
        key_id: str,
        project: str,
        name: str | None,
        secret_hash: bytes,
        limits: Limits = NO_LIMITS,
        expires_at: int | None = None,
        allowed_models: Sequence[str] | None = None,
    ) -> KeyRecord:
        created = iso(datetime.now(UTC).timestamp())
        with self._session() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO projects (name, created_at) VALUES (%s, %s) ON CONFLICT DO NOTHING", (project, created)
            )
            models = models_json(allowed_models)
            conn.execute(
                "INSERT INTO keys (id, project, name, secret_hash, created_at, rpm, itpm, otpm, concurrency, "
                "daily_nanos, monthly_nanos, expires_unix, allowed_models) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (key_id, project, name, secret_hash, created, *limit_values(limits), expires_at, models),
            )
            row = _one(conn.execute(f"{KEY_SELECT} WHERE id = %s", (key_id,)))
        return key_record(row)

    def list_keys(self, project: str | None = None) -> list[KeyRecord]:
        where, args = (" WHERE project = %s", (project,)) if project is not None else ("", ())
        with self._session() as conn:
            return [key_record(row) for row in conn.execute(f"{KEY_SELECT}{where} ORDER BY created_at, id", args)]

    def update_key(self, key_id: str, changes: dict[str, object]) -> KeyRecord | None:
        changes = dict(changes)
        if "allowed_models" in changes:
            models: Any = changes["allowed_models"]
            changes["allowed_models"] = models_json(models)
        self._update("keys", "id", key_id, changes, KEY_CHANGES)
        with self._session() as conn:
            row = conn.execute(f"{KEY_SELECT} WHERE id = %s", (key_id,)).fetchone()
        return key_record(row) if row else None

    def save_project(self, name: str, changes: dict[str, object], create: bool) -> ProjectRecord:
        if create:
            try:
                with self._session() as conn:
                    conn.execute(
                        "INSERT INTO projects (name, created_at) VALUES (%s, %s)",
                        (name, iso(datetime.now(UTC).timestamp())),
                    )
            except errors.UniqueViolation as exc:
                raise ValueError(f"project {name!r} already exists") from exc
        self._update("projects", "name", name, changes, PROJECT_CHANGES)
        record = self.project(name)
        if record is None:
            raise ValueError(f"no project {name!r}")
        return record

    def list_projects(self) -> list[ProjectRecord]:
        with self._session() as conn:
            return [project_record(row) for row in conn.execute(f"{PROJECT_SELECT} ORDER BY name")]

    def add_balance(self, project: str, nanos: int) -> int:
        """An operator's top-up, announced so every process rereads the balance."""
        with self._session() as conn, conn.transaction():
            row = conn.execute(
                "UPDATE projects SET balance_nanos = balance_nanos + %s WHERE name = %s RETURNING balance_nanos",
                (nanos, project),
            ).fetchone()
            conn.execute("SELECT pg_notify(%s, current_schema())", (CHANNEL,))
        if row is None:
            raise ValueError(f"no project {project!r}")
        return int(row[0])

    def _balance(self, project: str) -> int:
        with self._session() as conn:
            row = conn.execute("SELECT balance_nanos FROM projects WHERE name = %s", (project,)).fetchone()
        return int(row[0]) if row else 0

    def balances(self) -> PendingBalances:
        return self._balances

    def spend_now(self) -> list[tuple[ScopeKind, str, int, int]]:
        now = datetime.now(UTC)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        result: list[tuple[ScopeKind, str, int, int]] = []
        with self._reader() as conn:
            for column, kind in (("key_id", "key"), ("project", "project")):
                rows = conn.execute(
                    f"SELECT {column}, coalesce(sum(cost_nanos) FILTER (WHERE ts >= %s), 0)::bigint, "  # noqa: S608
                    f"coalesce(sum(cost_nanos), 0)::bigint FROM ledger WHERE ts >= %s AND {column} IS NOT NULL "
                    f"GROUP BY {column}",
                    (day, month),
                )
                scope_kind: ScopeKind = "key" if kind == "key" else "project"
                result.extend((scope_kind, str(scope), int(today), int(total)) for scope, today, total in rows)
        return result

    def _update(
        self, table: str, id_column: str, ident: str, changes: dict[str, object], allowed: frozenset[str]
    ) -> None:
        names = checked_changes(changes, allowed)
        if not names:
            return
        assignments = ", ".join(f"{name} = %s" for name in names)  # names come from `allowed` only
        with self._session() as conn:
            conn.execute(
                f"UPDATE {table} SET {assignments} WHERE {id_column} = %s",  # noqa: S608
                (*(changes[name] for name in names), ident),
            )

    def revoke_key(self, key_id: str) -> bool:
        with self._session() as conn:
            cursor = conn.execute(
                "UPDATE keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (iso(datetime.now(UTC).timestamp()), key_id),
            )
            return cursor.rowcount == 1

    # --- console tokens -------------------------------------------------------------------

    def create_console_token(
        self, token_id: str, project: str, name: str | None, secret_hash: bytes
    ) -> ConsoleTokenRecord:
        if self.project(project) is None:
            raise ValueError(f"no project {project!r}")
        with self._session() as conn:
            conn.execute(
                "INSERT INTO console_tokens (id, project, name, secret_hash, created_at) VALUES (%s, %s, %s, %s, %s)",
                (token_id, project, name, secret_hash, iso(datetime.now(UTC).timestamp())),
            )
        record = self.find_console_token(token_id)
        assert record is not None
        return record

    def find_console_token(self, token_id: str) -> ConsoleTokenRecord | None:
        with self._session() as conn:
            row = conn.execute(f"{CONSOLE_SELECT} WHERE id = %s", (token_id,)).fetchone()
        return ConsoleTokenRecord(*row) if row else None

    def list_console_tokens(self, project: str | None = None) -> list[ConsoleTokenRecord]:
        where, args = ("WHERE project = %s", (project,)) if project is not None else ("", ())
        with self._session() as conn:
            rows = conn.execute(f"{CONSOLE_SELECT} {where} ORDER BY created_at, id", args)
            return [ConsoleTokenRecord(*row) for row in rows]

    def revoke_console_token(self, token_id: str) -> bool:
        with self._session() as conn:
            cursor = conn.execute(
                "UPDATE console_tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (iso(datetime.now(UTC).timestamp()), token_id),
            )
            return cursor.rowcount == 1

    def ping(self) -> None:
        self._read_one("SELECT 1", ())

    # --- batches --------------------------------------------------------------------------

    async def record_batch(self, batch: BatchRecord) -> None:
        await asyncio.to_thread(self._record_batch, batch)

    async def find_batch(self, batch_id: str) -> BatchRecord | None:
        return await asyncio.to_thread(self._find_batch, batch_id)

    async def record_batch_file(self, file_id: str, batch_id: str) -> None:
        await asyncio.to_thread(self._record_batch_file, file_id, batch_id)

    async def batch_of_file(self, file_id: str) -> str | None:
        return await asyncio.to_thread(self._batch_of_file, file_id)

    async def claim_batch_results(self, batch_id: str, custom_ids: Sequence[str]) -> list[str]:
        return await asyncio.to_thread(self._claim_batch_results, batch_id, custom_ids)

    def _record_batch(self, batch: BatchRecord) -> None:
        with self._session() as conn:
            conn.execute(
                "INSERT INTO batches VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", batch_values(batch)
            )

    def _find_batch(self, batch_id: str) -> BatchRecord | None:
        row = self._read_one(f"{BATCH_SELECT} WHERE id = %s", (batch_id,))
        return batch_record(row) if row else None

    def _record_batch_file(self, file_id: str, batch_id: str) -> None:
        with self._session() as conn:
            conn.execute("INSERT INTO batch_files VALUES (%s, %s) ON CONFLICT DO NOTHING", (file_id, batch_id))

    def _batch_of_file(self, file_id: str) -> str | None:
        row = self._read_one("SELECT batch_id FROM batch_files WHERE file_id = %s", (file_id,))
        return str(row[0]) if row else None

    def _claim_batch_results(self, batch_id: str, custom_ids: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(custom_ids))
        with self._session() as conn:
            # Only the rows this statement inserted come back: a concurrent claim of the same
            # ids waits on them, then inserts none.
            rows = conn.execute(
                "INSERT INTO batch_results (batch_id, custom_id) SELECT %s, unnest(%s::text[])"
                " ON CONFLICT DO NOTHING RETURNING custom_id",
                (batch_id, wanted),
            ).fetchall()
        claimed = {custom_id for (custom_id,) in rows}
        return [custom_id for custom_id in wanted if custom_id in claimed]

    def console_secret(self, candidate: bytes) -> bytes:
        with self._session() as conn:
            conn.execute(
                "INSERT INTO console_secret (id, secret, created_at) VALUES (1, %s, %s) ON CONFLICT DO NOTHING",
                (candidate, iso(datetime.now(UTC).timestamp())),
            )
            (secret,) = _one(conn.execute("SELECT secret FROM console_secret WHERE id = 1"))
        return bytes(secret)

    # --- ledger ---------------------------------------------------------------------------

    def write_ledger(self, rows: Sequence[LedgerRow]) -> None:
        """One transaction: the rows by COPY, inserted unless already there, summed into the
        rollups, and the balance changes. Safe to repeat after a failure: nothing counts twice."""
        with self._writer_lock:
            try:
                self._write(rows)
            except psycopg.OperationalError as exc:
                raise self._unreachable(exc) from exc

    def _write(self, rows: Sequence[LedgerRow]) -> None:
        if self._writer is None or self._writer.closed:
            self._writer = self._connect()
            ledger.prepare(self._writer)
        times = [ledger.millis(row.ts) for row in rows]
        months = {(t.year, t.month) for t in times}
        for attempt in range(2):
            for year, month in sorted(months - self._months):
                ledger.add_partition(self._writer, year, month)
                self._months.add((year, month))
            try:
                ledger.write(self._writer, rows, times, self._balances.take())
                break
            except errors.CheckViolation:
                # No partition for a row: another process's retention dropped a month this one
                # thought was there (rows that old come from a spool written long after).
                if attempt:
                    raise
                self._months.clear()
        self._balances.committed()

    def prune_ledger(self, before: float, limit: int) -> int:
        """Whole months older than `before` are dropped (no row by row deletion, no bloat); in
        the month `before` falls in, rows are deleted `limit` at a time."""
        with self._reader() as conn:
            count, dropped = ledger.prune(conn, datetime.fromtimestamp(before, UTC), limit)
        self._months.discard(dropped or (0, 0))
        return count

    # --- reports --------------------------------------------------------------------------

    def rollup(
        self,
        since: int,
        until: int,
        filters: Filters,
        by: Dimension | None,
        tag_key: str | None = None,
        bucketing: Bucketing | None = None,
        only: Sequence[str] | None = None,
    ) -> list[RollupLine]:
        with self._reader() as conn:
            return reports.rollup(conn, since, until, filters, by, tag_key, bucketing, only)

    def raw_rows(self, since: int, until: int, filters: Filters, by: Dimension | None) -> int:
        if plan.holds(filters, by):
            return 0
        with self._reader() as conn:
            return reports.raw_rows(conn, since, until, filters)

    def tag_keys(self, since: int, until: int, project: str | None) -> list[str]:
        with self._reader() as conn:
            return reports.tag_keys(conn, since, until, project)

    def last_used(self, project: str | None) -> dict[str, float]:
        with self._reader() as conn:
            return reports.last_used(conn, project)

    def export_rows(
        self, since: int, until: int, project: str | None, after: tuple[float, str] | None
    ) -> Iterator[list[LedgerRow]]:
        with self._reader() as conn:
            yield from reports.export_rows(conn, since, until, project, after)

    def export_lines(
        self,
        since: int,
        until: int,
        project: str | None,
        after: tuple[float, str] | None,
        fmt: Literal["csv", "jsonl"],
        offsets: Sequence[tuple[int, int, str]],
    ) -> Iterator[bytes]:
        yield from render(self.export_rows(since, until, project, after), fmt, OffsetTimes(offsets))

    def ledger_rows(self) -> list[dict[str, object]]:
        """Every row, as column -> value in the SQLite store's forms; for tests."""
        with self._reader() as conn:
            return ledger.rows_as_text(conn)

    def close(self) -> None:
        self._stopping.set()
        self._listener.join(timeout=5)
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _one(cursor: psycopg.Cursor[Any]) -> Any:
    """The row a statement must return (psycopg types fetchone() as optional)."""
    row = cursor.fetchone()
    if row is None:
        raise StoreUnavailable("the database returned no row where one must be")
    return row
