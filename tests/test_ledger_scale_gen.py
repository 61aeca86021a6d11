"""The ledger benchmark's generator, small: its rollups hold exactly the sums of its raw rows.

bench/ledger_scale.py times reports on a generated ledger; the timings mean something only if
that ledger's rollups are the ones production keeps. The generator writes through the store's
own `write_ledger`, in batches whose quarter hours straddle one another; here the rollups are
recomputed in Python from the raw rows and compared, row for row.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
import sys
from collections import defaultdict
from contextlib import closing
from pathlib import Path
from types import ModuleType

from buzz.billing.ledger import LedgerRow
from buzz.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
SUMS = (
    "requests, errors, input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, "
    "cache_read_tokens, cost_nanos, list_cost_nanos, unpriced, estimated"
)
END = 1_796_000_000.0  # a fixed moment: the generated ledger is the same on every run

SPANS = (900, 3600, 21600, 86400)  # each rollup row is kept per quarter hour, hour, six hours and UTC day
Sums = tuple[int, ...]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ledger_gen", ROOT / "bench" / "ledger_gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ledger_gen"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def sums(row: LedgerRow) -> Sums:
    return (
        1,
        int(row.status >= 400),
        row.input_tokens,
        row.output_tokens,
        row.cache_write_5m_tokens,
        row.cache_write_1h_tokens,
        row.cache_read_tokens,
        row.cost_nanos or 0,
        row.list_cost_nanos or 0,
        int(row.cost_nanos is None and row.usage_source != "none"),
        int(row.usage_source == "estimated"),
    )


def add(into: dict[tuple[object, ...], Sums], key: tuple[object, ...], value: Sums) -> None:
    before = into.get(key, (0,) * len(value))
    into[key] = tuple(a + b for a, b in zip(before, value, strict=True))


def expected(rows: list[LedgerRow]) -> dict[str, dict[tuple[object, ...], Sums]]:
    out: dict[str, dict[tuple[object, ...], Sums]] = defaultdict(dict)
    for r in rows:
        value = sums(r)
        for span in SPANS:
            head = (r.project or "", span, int(r.ts) // span * span)
            tail = (r.key_id or "", r.provider or "", r.model or "", r.surface, r.status // 100)
            add(out["rollup"], (*head, *tail), value)
            add(out["rollup_user"], (*head, r.user_id or ""), value)  # '' for rows without a user
            for tag in r.tags:
                name, sep, rest = tag.partition("=")
                add(out["rollup_tag"], (*head, *((name, rest) if sep else ("", tag))), value)
            for name in {tag.partition("=")[0] if "=" in tag else "" for tag in r.tags}:
                add(out["rollup_tag_key"], (*head, name), value)
    return out


def stored(path: Path, table: str, dims: int) -> dict[tuple[object, ...], Sums]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - a constant name
    return {tuple(row[:dims]): tuple(row[dims:]) for row in rows}


def test_generated_rollups_equal_the_sums_of_the_raw_rows(tmp_path: Path) -> None:
    gen = load_generator()
    path = tmp_path / "buzz.sqlite3"
    made = gen.generate(path, rows=2000, days=2, end=END, seed=7, batch=300)
    assert made.rows == 2000

    store = SQLiteStore(path)
    try:
        rows = [row for batch in store.export_rows(0, int(END) + 1, None, None) for row in batch]
        last_used = store.last_used(None)
    finally:
        store.close()
    assert len(rows) == 2000
    assert {r.status for r in rows} > {200, 401, 429}  # errors and refusals are in it
    assert any(r.cost_nanos is None and r.usage_source == "reported" for r in rows)  # and unpriced rows
    assert any(r.cache_read_tokens for r in rows)
    assert any(r.user_id is None for r in rows) and any(r.user_id for r in rows)

    want = expected(rows)
    assert stored(path, "rollup", 8) == want["rollup"]
    assert stored(path, "rollup_user", 4) == want["rollup_user"]
    assert stored(path, "rollup_tag", 5) == want["rollup_tag"]
    assert stored(path, "rollup_tag_key", 4) == want["rollup_tag_key"]
    latest: dict[str, float] = {}
    for r in rows:
        if r.key_id is not None:
            latest[r.key_id] = max(latest.get(r.key_id, 0.0), r.ts)
    assert last_used == latest


def test_a_cached_ledger_is_reused_under_later_migrations_and_made_again_when_one_changed(tmp_path: Path) -> None:
    load_generator()
    spec = importlib.util.spec_from_file_location("ledger_data", ROOT / "bench" / "ledger_data.py")
    assert spec is not None and spec.loader is not None
    data = importlib.util.module_from_spec(spec)
    sys.modules["ledger_data"] = data
    spec.loader.exec_module(data)
    from rich.console import Console

    quiet = Console(file=open(tmp_path / "out.txt", "w"))  # noqa: SIM115 - closed with the test's process
    params = data.Params(rows=2_000, days=1, seed=3, batch=500)
    made = data.ensure(tmp_path, params, quiet)
    assert not made["reused"] and made["rows"] == 2_000
    path = data.database(tmp_path)
    # As if it had been made before the newest migration: that one is applied, the rows kept.
    meta = json.loads((tmp_path / data.META).read_text())
    newest = params.schema[-1].split(":")[0]
    meta["params"]["schema"] = params.schema[:-1]
    (tmp_path / data.META).write_text(json.dumps(meta))
    script = (ROOT / "src" / "buzz" / "store" / "migrations" / "sqlite" / newest).read_text()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (newest,))
        for table in re.findall(r"CREATE TABLE (\w+)", script):
            conn.execute(f"DROP TABLE {table}")
        for table, column in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", script):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    again = data.ensure(tmp_path, params, quiet)
    assert again["reused"] and again["migrations_applied"][0]["added"] == params.schema[-1:]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = ?", (newest,)).fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (2_000,)
    # A migration it was made under has changed since: a new ledger.
    meta = json.loads((tmp_path / data.META).read_text())
    meta["params"]["schema"][0] = meta["params"]["schema"][0].split(":")[0] + ":000000000000"
    (tmp_path / data.META).write_text(json.dumps(meta))
    assert not data.ensure(tmp_path, params, quiet)["reused"]
