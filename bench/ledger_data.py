"""The cached ledger database of bench/ledger_scale.py: made once per set of parameters, reused
after, so that rerunning the timings does not cost a new 10-million-row ledger."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

import ledger_gen
from buzz.store.sqlite import SQLiteStore

# Bumped whenever ledger_gen's distribution changes, so an older cached ledger is not reused.
GENERATOR_VERSION = 1
META = "ledger-scale.json"


def schema() -> list[str]:
    """The store's migrations, each as "name:digest". A ledger made under a prefix of them is
    reused, and the store applies the rest when it opens it, as it would in production; one made
    under a migration that has since changed is made again."""
    folder = resources.files("buzz.store") / "migrations" / "sqlite"
    return [
        f"{script.name}:{hashlib.sha256(script.read_bytes()).hexdigest()[:12]}"
        for script in sorted(folder.iterdir(), key=lambda p: p.name)
        if script.name.endswith(".sql")
    ]


def _reusable(made: dict[str, Any], params: Params) -> bool:
    wanted = asdict(params)
    same = all(made.get(name) == value for name, value in wanted.items() if name != "schema")
    earlier = made.get("schema")
    return same and isinstance(earlier, list) and earlier == wanted["schema"][: len(earlier)]


@dataclass(frozen=True, slots=True)
class Params:
    rows: int
    days: int
    seed: int
    batch: int
    generator: int = GENERATOR_VERSION
    schema: list[str] = field(default_factory=schema)


def database(data_dir: Path) -> Path:
    return data_dir / "buzz.sqlite3"  # where `buzz serve` looks in BUZZ_DATA_DIR


def ensure(data_dir: Path, params: Params, console: Console, regenerate: bool = False) -> dict[str, Any]:
    """The ledger's description (parameters, end time, generation figures): the cached one when
    it was made with the same parameters and finished, a new one otherwise."""
    meta_path = data_dir / META
    if not regenerate and meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if _reusable(meta.get("params", {}), params) and meta.get("complete") and database(data_dir).exists():
            console.print(f"reusing the ledger in {data_dir} (made {meta['generated_at']})")
            added = params.schema[len(meta["params"]["schema"]) :]
            if added:
                started = time.monotonic()
                SQLiteStore(database(data_dir)).close()  # applies the migrations added since
                took = round(time.monotonic() - started, 1)
                console.print(f"  applied {', '.join(a.split(':')[0] for a in added)} in {took} s")
                meta["params"]["schema"] = params.schema
                meta.setdefault("migrations_applied", []).append({"added": added, "seconds": took})
                meta_path.write_text(json.dumps(meta, indent=2) + "\n")
            meta["reused"] = True
            return meta
    data_dir.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database(data_dir)}{suffix}").unlink(missing_ok=True)
    end = time.time()
    console.print(f"generating {params.rows:,} ledger rows over {params.days} days into {data_dir}")
    report_every = max(params.batch, params.rows // 20)
    next_report = [report_every]

    def progress(written: int, elapsed: float) -> None:
        if written >= next_report[0]:
            next_report[0] += report_every
            console.print(f"  {written:>12,} rows  {elapsed:7.0f} s  {written / elapsed:9,.0f} rows/s")

    made = ledger_gen.generate(database(data_dir), params.rows, params.days, end, params.seed, params.batch, progress)
    with closing(sqlite3.connect(database(data_dir))) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # so the size on disk is the database's own
    meta = {
        "params": asdict(params),
        "end": end,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": made.rows,
        "seconds": round(made.seconds, 1),
        "rows_per_s": round(made.rows / made.seconds),
        "write_seconds": round(made.write_seconds, 1),
        "write_rows_per_s": round(made.rows / made.write_seconds),
        "complete": True,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    meta["reused"] = False
    return meta


def describe(data_dir: Path) -> dict[str, Any]:
    """Size on disk and row counts of the ledger and its rollups (per span where they have one)."""
    path = database(data_dir)
    sizes = {p.name: p.stat().st_size for p in data_dir.glob("buzz.sqlite3*")}
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        counts: dict[str, int] = {}
        by_span: dict[str, dict[int, int]] = {}
        for table in ("ledger", *(n for n in names if n.startswith("rollup") and n != "rollup_state"), "key_last_used"):
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if "span" in columns:
                by_span[table] = dict(conn.execute(f"SELECT span, count(*) FROM {table} GROUP BY span"))  # noqa: S608
                counts[table] = sum(by_span[table].values())
            else:
                counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            tables = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall())
        except sqlite3.OperationalError:  # SQLite built without the dbstat table
            tables = {}
    return {
        "bytes_on_disk": sum(sizes.values()),
        "files": sizes,
        "page_size": page_size,
        "rows": counts,
        "rows_by_span": by_span,
        "bytes_by_table": tables,
    }
