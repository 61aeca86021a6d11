"""The embedded default store: one SQLite file in the data directory, WAL, one writer."""

from __future__ import annotations

import fcntl
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec

from buzz.billing.ledger import LedgerRow
from buzz.limits.base import Limits, ScopeKind
from buzz.store import plan, sqlite_export
from buzz.store import sqlite_reports as reports
from buzz.store.base import (
    BatchRecord,
    Bucketing,
    ConsoleTokenRecord,
    Dimension,
    Filters,
    KeyRecord,
    ProjectRecord,
    RollupLine,
)
from buzz.store.records import (
    BATCH_SELECT,
    CONSOLE_SELECT,
    KEY_CHANGES,
    KEY_SELECT,
    LEDGER_COLUMNS,
    NO_LIMITS,
    PROJECT_CHANGES,
    PROJECT_SELECT,
    PendingBalances,
    batch_record,
    batch_values,
    checked_changes,
    key_record,
    ledger_values,
    limit_values,
    models_json,
    project_record,
)
from buzz.store.timetext import RowTimes, iso

_LEDGER_COLUMNS = ", ".join(LEDGER_COLUMNS)
_INSERT = f"INSERT OR IGNORE INTO ledger ({_LEDGER_COLUMNS}) VALUES ({', '.join('?' * len(LEDGER_COLUMNS))})"  # noqa: S608


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA temp_store=MEMORY")  # the rollups' per-fold staging tables: small, and never kept
    return conn


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT on a connection in autocommit mode, rolled back on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._conn.execute("COMMIT" if error is None else "ROLLBACK")


# How often the ledger writer adds its rows to the rollups. Each fold costs a fixed tens of
# microseconds per statement, and an upsert per group of rows; folding a second of rows at once
# groups them far better than folding each 50 ms batch (a fifth of the cost at 4,000 requests a
# second). A report never misses the rows in between: it folds them first (`_fold_pending`).
FOLD_INTERVAL = 1.0


class SQLiteStore:
    # A transaction every 50 ms at most: a local commit costs little, and the rollups are folded
    # once a second anyway.
    write_every = 0.05

    def __init__(
        self, path: Path, fold_interval: float = FOLD_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        # Several processes may open the file at once (workers, the CLI): the first to hold the
        # lock sets WAL and migrates, the others then find it done. Neither step waits on
        # busy_timeout by itself.
        with open(path.with_name(path.name + ".open-lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._conn = _connect(path)
            self._migrate()
            with self._transaction():  # rows written before the rollups existed, once
                reports.fold_new_rows(self._conn)
        self._fold_interval = fold_interval
        self._clock = clock
        self._folded_at = -math.inf
        self._unfolded_tags = False  # in rows written since the last fold
        self._writer: sqlite3.Connection | None = None
        self._writer_lock = threading.Lock()
        self._data_version = -1
        self._keys_version = 0
        self._balances = PendingBalances(self._balance)
        self._row_times = RowTimes()  # the writer thread's, under _writer_lock
        self._version_cursor = self._conn.cursor()  # kept: a cursor per request costs more than the read

    # --- schema ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in self._conn.execute("SELECT version FROM schema_migrations")}
        folder = resources.files("buzz.store") / "migrations" / "sqlite"
        for script in sorted(folder.iterdir(), key=lambda p: p.name):
            if not script.name.endswith(".sql") or script.name in applied:
                continue
            # executescript commits on its own; BEGIN/COMMIT inside keeps each migration atomic.
            applied_at = iso(datetime.now(UTC).timestamp())
            self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{script.read_text()}\n"
                f"INSERT INTO schema_migrations VALUES ('{script.name}', '{applied_at}');\nCOMMIT;"
            )

    # --- keys -----------------------------------------------------------------------------

    async def find_key(self, key_id: str) -> KeyRecord | None:
        row = self._conn.execute(f"{KEY_SELECT} WHERE id = ?", (key_id,)).fetchone()
        return key_record(row) if row else None

    async def find_project(self, name: str) -> ProjectRecord | None:
        return self.project(name)

    def project(self, name: str) -> ProjectRecord | None:
        row = self._conn.execute(f"{PROJECT_SELECT} WHERE name = ?", (name,)).fetchone()
        return project_record(row) if row else None

    def keys_version(self) -> int:
        # data_version moves only when another connection commits: one cheap read per request,
        # and the counter row is read only then.
        (data_version,) = self._version_cursor.execute("PRAGMA data_version").fetchone()
        if data_version != self._data_version:
            self._data_version = data_version
            (self._keys_version,) = self._conn.execute(
                "SELECT value FROM counters WHERE name = 'keys_version'"
            ).fetchone()
        return self._keys_version

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
        models = models_json(allowed_models)
        with self._transaction():
            self._conn.execute("INSERT OR IGNORE INTO projects (name, created_at) VALUES (?, ?)", (project, created))
            self._conn.execute(
                "INSERT INTO keys (id, project, name, secret_hash, created_at, rpm, itpm, otpm, concurrency, "
                "daily_nanos, monthly_nanos, expires_unix, allowed_models) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key_id, project, name, secret_hash, created, *limit_values(limits), expires_at, models),
            )
        record = self._conn.execute(f"{KEY_SELECT} WHERE id = ?", (key_id,)).fetchone()
        return key_record(record)

    def list_keys(self, project: str | None = None) -> list[KeyRecord]:
        sql = KEY_SELECT
        args: tuple[str, ...] = ()
        if project is not None:
            sql += " WHERE project = ?"
            args = (project,)
        return [key_record(row) for row in self._conn.execute(sql + " ORDER BY created_at, id", args)]

    def update_key(self, key_id: str, changes: dict[str, object]) -> KeyRecord | None:
        changes = dict(changes)
        if "allowed_models" in changes:
            models: Any = changes["allowed_models"]
            changes["allowed_models"] = models_json(models)
        self._update("keys", "id", key_id, changes, KEY_CHANGES)
        row = self._conn.execute(f"{KEY_SELECT} WHERE id = ?", (key_id,)).fetchone()
        return key_record(row) if row else None

    def save_project(self, name: str, changes: dict[str, object], create: bool) -> ProjectRecord:
        if create:
            created = iso(datetime.now(UTC).timestamp())
            try:
                self._conn.execute("INSERT INTO projects (name, created_at) VALUES (?, ?)", (name, created))
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"project {name!r} already exists") from exc
        self._update("projects", "name", name, changes, PROJECT_CHANGES)
        row = self._conn.execute(f"{PROJECT_SELECT} WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ValueError(f"no project {name!r}")
        return project_record(row)

    def list_projects(self) -> list[ProjectRecord]:
        return [project_record(row) for row in self._conn.execute(f"{PROJECT_SELECT} ORDER BY name")]

    def add_balance(self, project: str, nanos: int) -> int:
        """An operator's top-up: the running gateway rereads the balance on its next request."""
        with self._transaction():
            row = self._conn.execute(
                "UPDATE projects SET balance_nanos = balance_nanos + ? WHERE name = ? RETURNING balance_nanos",
                (nanos, project),
            ).fetchone()
            self._conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'keys_version'")
        if row is None:
            raise ValueError(f"no project {project!r}")
        return int(row[0])

    def _balance(self, project: str) -> int:
        row = self._conn.execute("SELECT balance_nanos FROM projects WHERE name = ?", (project,)).fetchone()
        return int(row[0]) if row else 0

    def balances(self) -> PendingBalances:
        """Prepaid balances for the in-process limiter: read on the event loop, written in batches."""
        return self._balances

    def spend_now(self) -> list[tuple[ScopeKind, str, int, int]]:
        """Each key's and project's spend this UTC day and month, from the ledger (to seed limits)."""
        now = datetime.now(UTC)
        day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
        result: list[tuple[ScopeKind, str, int, int]] = []
        for column, kind in (("key_id", "key"), ("project", "project")):
            # `column` is one of two constants above, never caller text.
            rows = self._conn.execute(
                f"SELECT {column}, coalesce(sum(CASE WHEN substr(ts, 1, 10) = ? THEN cost_nanos END), 0), "  # noqa: S608
                f"coalesce(sum(cost_nanos), 0) FROM ledger WHERE ts >= ? AND {column} IS NOT NULL GROUP BY {column}",
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
        assignments = ", ".join(f"{name} = ?" for name in names)  # names come from `allowed` only
        self._conn.execute(
            f"UPDATE {table} SET {assignments} WHERE {id_column} = ?",  # noqa: S608
            (*(changes[name] for name in names), ident),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def revoke_key(self, key_id: str) -> bool:
        cursor = self._conn.execute(
            "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (iso(datetime.now(UTC).timestamp()), key_id),
        )
        return cursor.rowcount == 1

    def ping(self) -> None:
        self._conn.execute("SELECT 1").fetchone()

    # --- batches (answered on the event loop, as the key lookups are: a local file) --------

    async def record_batch(self, batch: BatchRecord) -> None:
        self._conn.execute("INSERT OR IGNORE INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)", batch_values(batch))

    async def find_batch(self, batch_id: str) -> BatchRecord | None:
        row = self._conn.execute(f"{BATCH_SELECT} WHERE id = ?", (batch_id,)).fetchone()
        return batch_record(row) if row else None

    async def record_batch_file(self, file_id: str, batch_id: str) -> None:
        self._conn.execute("INSERT OR IGNORE INTO batch_files VALUES (?, ?)", (file_id, batch_id))

    async def batch_of_file(self, file_id: str) -> str | None:
        row = self._conn.execute("SELECT batch_id FROM batch_files WHERE file_id = ?", (file_id,)).fetchone()
        return str(row[0]) if row else None

    async def claim_batch_results(self, batch_id: str, custom_ids: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(custom_ids))
        with self._transaction():  # the write lock: another process's claim waits, then sees these
            claimed: set[str] = set()
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                claimed.update(
                    custom_id
                    for (custom_id,) in self._conn.execute(
                        f"SELECT custom_id FROM batch_results WHERE batch_id = ? AND custom_id IN ({marks})",  # noqa: S608
                        (batch_id, *part),
                    )
                )
            new = [custom_id for custom_id in wanted if custom_id not in claimed]
            self._conn.executemany("INSERT INTO batch_results VALUES (?, ?)", [(batch_id, c) for c in new])
        return new

    # --- console tokens -------------------------------------------------------------------

    def create_console_token(
        self, token_id: str, project: str, name: str | None, secret_hash: bytes
    ) -> ConsoleTokenRecord:
        if self.project(project) is None:
            raise ValueError(f"no project {project!r}")
        created = iso(datetime.now(UTC).timestamp())
        self._conn.execute(
            "INSERT INTO console_tokens (id, project, name, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (token_id, project, name, secret_hash, created),
        )
        record = self.find_console_token(token_id)
        assert record is not None
        return record

    def find_console_token(self, token_id: str) -> ConsoleTokenRecord | None:
        row = self._conn.execute(f"{CONSOLE_SELECT} WHERE id = ?", (token_id,)).fetchone()
        return ConsoleTokenRecord(*row) if row else None

    def list_console_tokens(self, project: str | None = None) -> list[ConsoleTokenRecord]:
        where, args = ("WHERE project = ?", (project,)) if project is not None else ("", ())
        rows = self._conn.execute(f"{CONSOLE_SELECT} {where} ORDER BY created_at, id", args)
        return [ConsoleTokenRecord(*row) for row in rows]

    def revoke_console_token(self, token_id: str) -> bool:
        cursor = self._conn.execute(
            "UPDATE console_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (iso(datetime.now(UTC).timestamp()), token_id),
        )
        return cursor.rowcount == 1

    def console_secret(self, candidate: bytes) -> bytes:
        self._conn.execute(
            "INSERT OR IGNORE INTO console_secret (id, secret, created_at) VALUES (1, ?, ?)",
            (candidate, iso(datetime.now(UTC).timestamp())),
        )
        (secret,) = self._conn.execute("SELECT secret FROM console_secret WHERE id = 1").fetchone()
        return bytes(secret)

    # --- ledger ---------------------------------------------------------------------------

    def write_ledger(self, rows: Sequence[LedgerRow]) -> None:
        with self._writer_lock:
            if self._writer is None:
                self._writer = _connect(self._path)
            stamp = self._row_times
            params = [
                ledger_values(r, stamp(r.ts), msgspec.json.encode(r.tags).decode() if r.tags else "[]") for r in rows
            ]
            changes = self._balances.take()
            # IMMEDIATE: the write lock is taken here, waiting under busy_timeout while another
            # worker's writer holds it, so no statement of this transaction runs on a read
            # snapshot another writer has moved past (SQLite fails that at once, without waiting).
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                self._writer.executemany(_INSERT, params)
                self._writer.executemany(
                    "UPDATE projects SET balance_nanos = balance_nanos + ? WHERE name = ?",
                    [(delta, project) for project, delta in changes.items() if delta],
                )
                self._unfolded_tags |= any(r.tags for r in rows)
                now = self._clock()
                if params and now - self._folded_at >= self._fold_interval:
                    reports.fold_new_rows(self._writer, self._unfolded_tags)
                    self._folded_at = now
                    self._unfolded_tags = False
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")
            self._balances.committed()

    # --- reports: each on a connection of its own, so a long read never holds up the request
    # path's lookups on the shared one -------------------------------------------------------

    def _reader(self) -> closing[sqlite3.Connection]:
        """A connection for a report, once the rows written so far are in the rollups."""
        self._fold_pending()
        return closing(_connect(self._path))

    def _fold_pending(self) -> None:
        """Fold the rows the writer has not folded yet (its own, or another process's), so a
        report sees every committed row: at most a second of them, and usually none."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = _connect(self._path)
            (behind,) = self._writer.execute(reports.BEHIND).fetchone()
            if not behind:
                return
            with _Transaction(self._writer):
                reports.fold_new_rows(self._writer)
            self._folded_at = self._clock()
            self._unfolded_tags = False

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
            yield from sqlite_export.export_rows(conn, since, until, project, after)

    def export_lines(
        self,
        since: int,
        until: int,
        project: str | None,
        after: tuple[float, str] | None,
        fmt: Literal["csv", "jsonl"],
        offsets: Sequence[tuple[int, int, str]],
    ) -> Iterator[bytes]:
        with self._reader() as conn:
            yield from sqlite_export.export_lines(conn, since, until, project, after, fmt, offsets)

    def prune_ledger(self, before: float, limit: int) -> int:
        with self._writer_lock:
            if self._writer is None:
                self._writer = _connect(self._path)
            return self._writer.execute(reports.PRUNE, reports.prune_args(before, limit)).rowcount

    def ledger_rows(self) -> list[dict[str, object]]:
        """Every row, as column -> value; for tests and exports."""
        cursor = self._conn.execute(f"SELECT {_LEDGER_COLUMNS} FROM ledger ORDER BY ts, id")  # noqa: S608
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def close(self) -> None:
        self._fold_pending()
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self._conn.close()
