"""The PostgreSQL store's ledger: the table's columns, writing a batch, its monthly partitions,
and retention. Functions of a connection; `PostgresStore` owns the connections and the locks.

A write is one transaction: the rows by COPY into a staging table, inserted into the ledger
unless already there (same `ts` and `id`), the rows really inserted summed into the rollups, and
the balance changes. So a batch written again after a failure counts nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from buzz.billing.ledger import LedgerRow
from buzz.store import postgres_reports as reports
from buzz.store.records import LEDGER_COLUMNS, ledger_values

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COPY_TYPES = (
    "text",
    "timestamptz",
    "text",
    "text",
    "text",
    "text[]",
    "text",
    "text",
    "text",
    "int4",
    "text",
    *("int8",) * 7,
    "text",
    "text",
    "float8",
    "float8",
    "text",
    "text",
    "text",
)
# The batch arrives by COPY into `ledger_stage`; the rows the insert really added (not those a
# replay already wrote) land in `ledger_new`, which the rollups are summed from. Both are this
# connection's own, and empty again at every commit.
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS ledger_stage (LIKE ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE IF NOT EXISTS {reports.NEW_ROWS} (LIKE ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
)
_INSERT_NEW = (
    f"WITH added AS (INSERT INTO ledger SELECT * FROM ledger_stage ON CONFLICT DO NOTHING RETURNING *) "  # noqa: S608
    f"INSERT INTO {reports.NEW_ROWS} SELECT * FROM added"
)
# One round trip: the statements go as one simple query (they take no parameters).
_INSERT_AND_FOLD = ";\n".join((_INSERT_NEW, *reports.FOLD)).encode()

_PARTITION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('buzz-partitions:' || current_schema()))"


def millis(ts: float) -> datetime:
    """A row's time to the millisecond, cut as the SQLite store cuts it (after rounding to the µs)."""
    micros = round(ts * 1_000_000)
    return _EPOCH + timedelta(milliseconds=micros // 1000)


def _month_start(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}-01 00:00:00+00"


def values(row: LedgerRow, ts: datetime) -> tuple[Any, ...]:
    return ledger_values(row, ts, list(row.tags))


def partitions(conn: psycopg.Connection[Any]) -> list[tuple[str, int, int]]:
    """The ledger's monthly partitions, oldest first, as (name, year, month)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'ledger'::regclass ORDER BY c.relname"
    )
    found = []
    for (name,) in rows:
        digits = name.removeprefix("ledger_")
        if len(digits) == 6 and digits.isdigit():
            found.append((name, int(digits[:4]), int(digits[4:])))
    return found


def prepare(conn: psycopg.Connection[Any]) -> None:
    """Make the writer connection's staging tables (its own, emptied at every commit)."""
    for statement in _STAGING:
        conn.execute(statement)


def add_partition(conn: psycopg.Connection[Any], year: int, month: int) -> None:
    """The month's partition, made once whoever asks first (several writers may at once)."""
    following = (year + month // 12, month % 12 + 1)
    with conn.transaction():
        conn.execute(_PARTITION_LOCK)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS ledger_{year:04d}{month:02d} PARTITION OF ledger "
            f"FOR VALUES FROM ('{_month_start(year, month)}') TO ('{_month_start(*following)}')"
        )


def write(
    conn: psycopg.Connection[Any], rows: Sequence[LedgerRow], times: Sequence[datetime], balances: dict[str, int]
) -> None:
    """One transaction: the rows (each at its time in `times`), the rollups, the balance changes."""
    with conn.transaction(), conn.cursor() as cursor:
        if rows:
            with cursor.copy(f"COPY ledger_stage ({', '.join(LEDGER_COLUMNS)}) FROM STDIN") as copy:
                copy.set_types(_COPY_TYPES)
                for row, ts in zip(rows, times, strict=True):
                    copy.write_row(values(row, ts))
            cursor.execute(_INSERT_AND_FOLD)
        # In name order, as the rollups: concurrent writers lock rows in one order.
        updates = [(delta, project) for project, delta in sorted(balances.items()) if delta]
        if updates:
            cursor.executemany("UPDATE projects SET balance_nanos = balance_nanos + %s WHERE name = %s", updates)


def prune(conn: psycopg.Connection[Any], cutoff: datetime, limit: int) -> tuple[int, tuple[int, int] | None]:
    """Rows before `cutoff` removed: a whole month dropped if one is over (its row count, and
    the month), else at most `limit` rows deleted from the month `cutoff` falls in."""
    for name, year, month in partitions(conn):
        if datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC) <= cutoff:
            row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()  # noqa: S608 - our own name
            conn.execute(f"DROP TABLE {name}")
            return (int(row[0]) if row else 0), (year, month)
    cursor = conn.execute(
        "DELETE FROM ledger WHERE (ts, id) IN (SELECT ts, id FROM ledger WHERE ts < %s ORDER BY ts LIMIT %s)",
        (cutoff, limit),
    )
    return cursor.rowcount, None


def rows_as_text(conn: psycopg.Connection[Any]) -> list[dict[str, object]]:
    """Every row, as column -> value in the SQLite store's forms (time as text, tags as JSON)."""
    columns = [
        *LEDGER_COLUMNS[:1],
        "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS ts",
        *LEDGER_COLUMNS[2:5],
        "to_json(tags)::text AS tags",
        *LEDGER_COLUMNS[6:],
    ]
    cursor = conn.execute(f"SELECT {', '.join(columns)} FROM ledger ORDER BY ts, id")  # noqa: S608
    names = [d.name for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor]
