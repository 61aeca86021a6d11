"""How many ledger rows a second the PostgreSQL store writes, rollups included.

    python bench/ledger_pg.py [--rows 100000] [--server postgresql://postgres@127.0.0.1:5432/postgres]

Rows from bench/ledger_gen.py's realistic mix (a day of traffic over 200 keys, 2,000 users,
tags on most requests), written through `PostgresStore.write_ledger` into a fresh database:
- by one writer, in batches of 200 (what a gateway's writer hands over at 4,000 requests a second
  with the default 50 ms flush interval) and of 2,000;
- by two writers at once (two stores, as two processes have), batches of 200: their rollup
  upserts meet on the same rows;
- the same rows written again: a replay, which must add nothing.
Reports rows/s and the CPU PostgreSQL's processes spent per row. Writes JSON to
bench/results/ledger-pg-<time>.json; docs/performance.md has the figures of a run.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from rich.console import Console

from buzz.billing.ledger import LedgerRow
from buzz.billing.pricing import PriceBook
from buzz.proxy.auth import hash_secret
from buzz.store.base import Filters
from buzz.store.postgres import PostgresStore
from ledger_gen import PROJECTS, RowMaker, batches, make_keys, quarter_counts
from procs import ROOT, cpu_seconds, machine

DATABASE = "buzz_bench_ledger"


def _postgres_cpu() -> float:
    pids = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True, check=False).stdout.split()
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(int(pid))
        except OSError:
            continue
    return total


def _rows(count: int, seed: int) -> list[LedgerRow]:
    rng = random.Random(seed)
    prices = PriceBook()
    end = time.time()
    keys, weights = make_keys(rng, prices, datetime.fromtimestamp(end, UTC))
    maker = RowMaker(rng, keys, weights, prices.version)
    out: list[LedgerRow] = []
    for chunk in batches(maker, quarter_counts(count, 1, end), 10_000):
        out.extend(chunk)
    for i, row in enumerate(out):
        row.id = f"{row.id}-{seed}-{i}"  # unique across the sets made here
    return out


def _fresh(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return server.rsplit("/", 1)[0] + f"/{DATABASE}"


def _write(stores: list[PostgresStore], rows: list[LedgerRow], batch: int) -> dict[str, Any]:
    shares = [rows[i :: len(stores)] for i in range(len(stores))]
    cpu = _postgres_cpu()
    began = time.perf_counter()

    def writer(store: PostgresStore, share: list[LedgerRow]) -> None:
        for start in range(0, len(share), batch):
            store.write_ledger(share[start : start + batch])

    threads = [threading.Thread(target=writer, args=pair) for pair in zip(stores, shares, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    return {
        "rows": len(rows),
        "batch": batch,
        "writers": len(stores),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(rows) / seconds),
        "postgres_cpu_us_per_row": round((_postgres_cpu() - cpu) / len(rows) * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    console = Console()
    url = _fresh(args.server)
    stores = [PostgresStore(url), PostgresStore(url)]
    rng = random.Random(1)
    for project, _, _ in PROJECTS:
        stores[0].save_project(project, {}, create=True)
    keys, _ = make_keys(rng, PriceBook(), datetime.now(UTC))
    for key in keys:
        stores[0].create_key(key.id, key.project, None, hash_secret(f"secret-{key.id}"))
    results = []
    sets = {name: _rows(args.rows, seed) for seed, name in enumerate(("one-200", "one-2000", "two-200"), start=1)}
    for name, writers, batch in (("one-200", 1, 200), ("one-2000", 1, 2000), ("two-200", 2, 200)):
        result = {"case": name, **_write(stores[:writers], sets[name], batch)}
        results.append(result)
        console.print(result)
    replay = {"case": "replay-200", **_write(stores[:1], sets["one-200"], 200)}
    results.append(replay)
    console.print(replay)
    now = int(time.time()) // 900 * 900
    (total,) = stores[0].rollup(now - 3 * 86400, now + 900, Filters(), None)
    expected = 3 * args.rows
    console.print(f"rollups count {total.totals.requests:,} requests; rows written {expected:,}")
    if total.totals.requests != expected:
        raise SystemExit("the rollups do not match the rows written")
    for store in stores:
        store.close()
    out = ROOT / "bench" / "results" / f"ledger-pg-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    out.write_text(json.dumps({**document, "results": results}, indent=2) + "\n")
    console.print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
