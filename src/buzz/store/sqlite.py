"""The embedded default store: one SQLite file in the data directory, WAL, one writer."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import msgspec

from buzz.billing.ledger import LedgerRow
from buzz.store.base import GroupBy, KeyRecord, UsageLine

_LEDGER_COLUMNS = (
    "id, ts, key_id, project, user_id, tags, surface, provider, model, status, error_type, "
    "input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, "
    "cost_nanos, list_cost_nanos, price_version, usage_source, latency_ms, ttfb_ms, upstream_request_id"
)
_INSERT = f"INSERT INTO ledger ({_LEDGER_COLUMNS}) VALUES ({', '.join('?' * 23)})"  # noqa: S608

# Each grouping is a fixed SQL expression, never text from the caller.
_GROUPS: dict[str, tuple[str, str]] = {
    "model": ("coalesce(model, '-')", ""),
    "key": ("coalesce(key_id, '-')", ""),
    "project": ("coalesce(project, '-')", ""),
    "provider": ("coalesce(provider, '-')", ""),
    "user": ("coalesce(user_id, '-')", ""),
    "day": ("substr(ts, 1, 10)", ""),
    "tag": ("coalesce(t.value, '-')", "LEFT JOIN json_each(ledger.tags) AS t"),
}


def iso(ts: float) -> str:
    """Sortable UTC text with milliseconds; SQLite's date functions read it as it is."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._conn = _connect(path)
        self._migrate()
        self._writer: sqlite3.Connection | None = None
        self._writer_lock = threading.Lock()
        self._data_version = -1
        self._keys_version = 0

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
        row = self._conn.execute(
            "SELECT id, project, name, secret_hash, created_at, revoked_at FROM keys WHERE id = ?", (key_id,)
        ).fetchone()
        return KeyRecord(*row) if row else None

    async def keys_version(self) -> int:
        # data_version moves only when another connection commits: one cheap read per request,
        # and the counter row is read only then.
        (data_version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if data_version != self._data_version:
            self._data_version = data_version
            (self._keys_version,) = self._conn.execute(
                "SELECT value FROM counters WHERE name = 'keys_version'"
            ).fetchone()
        return self._keys_version

    def create_key(self, key_id: str, project: str, name: str | None, secret_hash: bytes) -> KeyRecord:
        created = iso(datetime.now(UTC).timestamp())
        self._conn.execute(
            "INSERT INTO keys (id, project, name, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (key_id, project, name, secret_hash, created),
        )
        return KeyRecord(key_id, project, name, secret_hash, created, None)

    def list_keys(self, project: str | None = None) -> list[KeyRecord]:
        sql = "SELECT id, project, name, secret_hash, created_at, revoked_at FROM keys"
        args: tuple[str, ...] = ()
        if project is not None:
            sql += " WHERE project = ?"
            args = (project,)
        return [KeyRecord(*row) for row in self._conn.execute(sql + " ORDER BY created_at, id", args)]

    def revoke_key(self, key_id: str) -> bool:
        cursor = self._conn.execute(
            "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (iso(datetime.now(UTC).timestamp()), key_id),
        )
        return cursor.rowcount == 1

    # --- ledger ---------------------------------------------------------------------------

    def write_ledger(self, rows: Sequence[LedgerRow]) -> None:
        with self._writer_lock:
            if self._writer is None:
                self._writer = _connect(self._path)
            params = [
                (
                    r.id,
                    iso(r.ts),
                    r.key_id,
                    r.project,
                    r.user_id,
                    msgspec.json.encode(list(r.tags)).decode(),
                    r.surface,
                    r.provider,
                    r.model,
                    r.status,
                    r.error_type,
                    r.input_tokens,
                    r.output_tokens,
                    r.cache_write_5m_tokens,
                    r.cache_write_1h_tokens,
                    r.cache_read_tokens,
                    r.cost_nanos,
                    r.list_cost_nanos,
                    r.price_version,
                    r.usage_source,
                    round(r.latency_ms, 3),
                    None if r.ttfb_ms is None else round(r.ttfb_ms, 3),
                    r.upstream_request_id,
                )
                for r in rows
            ]
            self._writer.execute("BEGIN")
            try:
                self._writer.executemany(_INSERT, params)
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    def usage(self, since: float, by: GroupBy) -> list[UsageLine]:
        expression, join = _GROUPS[by]
        sql = f"""
            SELECT {expression} AS grp, count(*),
                   sum(input_tokens), sum(output_tokens),
                   sum(cache_write_5m_tokens + cache_write_1h_tokens), sum(cache_read_tokens),
                   coalesce(sum(cost_nanos), 0), coalesce(sum(list_cost_nanos), 0),
                   sum(cost_nanos IS NULL AND usage_source != 'none'), sum(usage_source = 'estimated')
            FROM ledger {join}
            WHERE ts >= ?
            GROUP BY grp ORDER BY 7 DESC, 2 DESC, grp
        """  # noqa: S608 - the interpolated parts are constants from _GROUPS
        return [UsageLine(*row) for row in self._conn.execute(sql, (iso(since),))]

    def ledger_rows(self) -> list[dict[str, object]]:
        """Every row, as column -> value; for tests and exports."""
        cursor = self._conn.execute(f"SELECT {_LEDGER_COLUMNS} FROM ledger ORDER BY ts, id")  # noqa: S608
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def close(self) -> None:
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self._conn.close()
