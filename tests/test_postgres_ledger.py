"""What only the PostgreSQL ledger does: a partition per month, made as rows need them, and
retention that drops a whole month rather than deleting its rows one by one."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from buzz.billing.ledger import LedgerRow
from buzz.store.postgres import PostgresStore
from stores import Postgres


def _partitions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'ledger'::regclass ORDER BY c.relname"
        )
        return [name for (name,) in rows]


def _row(i: int, when: datetime) -> LedgerRow:
    return LedgerRow(f"req_{i:04d}", when.timestamp(), "anthropic", 200, "reported", 1.0, project="acme")


def test_a_partition_per_month_and_retention_drops_whole_months(postgres: Postgres) -> None:
    url = postgres.new_url()
    store = PostgresStore(url)
    try:
        assert _partitions(url) == []  # made as rows need them
        store.write_ledger(
            [
                _row(1, datetime(2026, 1, 31, 23, 59, 59, 999_000, tzinfo=UTC)),
                _row(2, datetime(2026, 2, 1, tzinfo=UTC)),
                _row(3, datetime(2026, 3, 15, tzinfo=UTC)),
                _row(4, datetime(2026, 3, 16, tzinfo=UTC)),
            ]
        )
        assert _partitions(url) == ["ledger_202601", "ledger_202602", "ledger_202603"]
        # A second store (another process) writing into a month that exists adds nothing.
        other = PostgresStore(url)
        other.write_ledger([_row(5, datetime(2026, 2, 10, tzinfo=UTC))])
        other.close()
        assert _partitions(url) == ["ledger_202601", "ledger_202602", "ledger_202603"]

        cutoff = datetime(2026, 3, 15, 12, tzinfo=UTC).timestamp()
        assert store.prune_ledger(cutoff, 100) == 1  # January, dropped whole
        assert store.prune_ledger(cutoff, 100) == 2  # February, dropped whole
        assert _partitions(url) == ["ledger_202603"]
        assert store.prune_ledger(cutoff, 100) == 1  # in March, row by row: the 15th's row
        assert store.prune_ledger(cutoff, 100) == 0
        assert [row["id"] for row in store.ledger_rows()] == ["req_0004"]
        # A row for a month that was dropped makes its partition again, from this process and
        # from one that wrote into that month before another dropped it.
        store.write_ledger([_row(6, datetime(2026, 1, 5, tzinfo=UTC))])
        assert "ledger_202601" in _partitions(url)
        late = PostgresStore(url)
        late.write_ledger([_row(7, datetime(2026, 2, 3, tzinfo=UTC))])  # it now knows February
        assert store.prune_ledger(datetime(2026, 3, 1, tzinfo=UTC).timestamp(), 100) == 1
        assert store.prune_ledger(datetime(2026, 3, 1, tzinfo=UTC).timestamp(), 100) == 1
        assert "ledger_202602" not in _partitions(url)
        late.write_ledger([_row(8, datetime(2026, 2, 4, tzinfo=UTC))])
        late.close()
        assert "ledger_202602" in _partitions(url)
        assert sorted(row["id"] for row in store.ledger_rows()) == ["req_0004", "req_0008"]
    finally:
        store.close()
