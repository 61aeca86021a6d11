"""The scaled-out stack against the embedded default: small bodies at c=32, limits on.

    python bench/scaled.py [--seconds 10] [--concurrency 32] [--rounds 1]
        [--database-server postgresql://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/10]

Three gateways, one after another, each on a fresh database with a key that has every limit set
(bench/limits.py) so the limiter does its whole work on every request:
- embedded: `buzz serve` on its defaults (SQLite, limits in process), one worker;
- PostgreSQL + Redis, one worker;
- PostgreSQL + Redis, two workers.
The embedded run is repeated at the end, to show how far this machine drifts within a run.
For each: req/s, p50, p99, buzz's CPU per request, and the CPU PostgreSQL and Redis spent per
request. After each run the ledger is checked: one row per request answered, none refused, and
the prepaid balance down by exactly the ledger's cost. Prints a table and writes JSON to
bench/results/scaled-<time>.json; docs/performance.md has the figures of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
from rich.console import Console
from rich.table import Table

import limits
import loadgen
from procs import (
    LOCALHOST,
    Service,
    buzz_env,
    children,
    cpu_seconds,
    free_port,
    machine,
    wait_ready,
    write_results,
)

SMALL = 1024
DATABASE = "buzz_bench_scaled"


def _pids(name: str) -> list[int]:
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False).stdout.split()
    return [int(pid) for pid in found]


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def _fresh_database(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return server.rsplit("/", 1)[0] + f"/{DATABASE}"


def _measure(
    load: loadgen.LoadGenerator, service: Service, url: str, body: Path, key: str, args: argparse.Namespace
) -> dict[str, Any]:
    load.run(url, body, key, args.concurrency, 2)  # warm
    buzz_pids = [service.pid, *children(service.pid)]
    services = {"postgres": _pids("postgres"), "redis": _pids("redis-server")}
    before = _cpu(buzz_pids), {name: _cpu(pids) for name, pids in services.items()}
    result = load.run(url, body, key, args.concurrency, args.seconds)
    cpu = _cpu(buzz_pids) - before[0]
    per_request = {
        name: round((_cpu(pids) - before[1][name]) / result.requests * 1e6, 1) if result.requests else None
        for name, pids in services.items()
    }
    return {
        "rps": round(result.rps),
        "p50_ms": round(result.p50_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "errors": result.errors,
        "requests": result.requests,
        "cpu_us_per_request": round(cpu / result.requests * 1e6, 1) if result.requests else None,
        "postgres_cpu_us_per_request": per_request["postgres"],
        "redis_cpu_us_per_request": per_request["redis"],
    }


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    load = loadgen.pick("auto", None)
    work = Path(tempfile.mkdtemp(prefix="buzz-scaled-"))
    body = work / "small.json"
    body.write_bytes(loadgen.message_body(SMALL))
    fake_port = free_port()
    fake_env = buzz_env(work / "fake", fake_port, free_port())
    fake = Service(
        "fake Anthropic upstream",
        [sys.executable, "-m", "fakes.fake_anthropic", "--port", str(fake_port), "--workers", "2"],
        fake_env,
        work / "fake.log",
    )
    # Each round brackets the scaled-out runs between two embedded ones, so a ratio compares
    # runs minutes apart at most: this machine's speed drifts by a third within a quarter hour.
    plan = [("embedded", 1), ("postgres+redis", 1), ("postgres+redis", 2), ("embedded", 1)] * args.rounds
    rows: list[dict[str, Any]] = []
    fake.start()
    try:
        wait_ready(fake, f"http://{LOCALHOST}:{fake_port}/v1/models")
        for number, (stack, workers) in enumerate(plan):
            data_dir = work / f"data-{number}"
            env = buzz_env(data_dir, fake_port, free_port())
            if stack != "embedded":
                env["BUZZ_DATABASE_URL"] = _fresh_database(args.database_server)
                env["BUZZ_REDIS_URL"] = args.redis_url
                redis.Redis.from_url(args.redis_url).flushdb()
            limited = limits.create_limited_key(env, f"bench-{number}")
            port = free_port()
            argv = [sys.executable, "-m", "buzz", "serve", "--port", str(port), "--workers", str(workers)]
            service = Service(f"{stack} x{workers}", argv, env, work / f"buzz-{number}.log")
            service.start()
            try:
                wait_ready(service, f"http://{LOCALHOST}:{port}/healthz")
                time.sleep(1.0)  # every worker up, not only the first to answer
                url = f"http://{LOCALHOST}:{port}/v1/messages"
                row = {"stack": stack, "workers": workers, **_measure(load, service, url, body, limited.key, args)}
            finally:
                service.stop()
            row["check"] = limits.verify(env, data_dir / "buzz.sqlite3", limited, row["errors"])
            rows.append(row)
            check = row["check"]
            console.print(
                f"{stack:>15} x{workers}: {row['rps']:>6,} req/s  p50 {row['p50_ms']:.3f} ms  "
                f"p99 {row['p99_ms']:.3f} ms"
                f"  CPU {row['cpu_us_per_request']} µs/req (postgres {row['postgres_cpu_us_per_request']}, "
                f"redis {row['redis_cpu_us_per_request']})  rejected {check['rejected']}  "
                f"balance matches ledger: {check['balance_matches_ledger']}"
            )
    finally:
        fake.stop()
    ratios: dict[int, list[float]] = {1: [], 2: []}
    for start in range(0, len(rows), 4):
        before, one, two, after = rows[start : start + 4]
        embedded = (before["rps"] + after["rps"]) / 2
        ratios[1].append(round(one["rps"] / embedded, 3))
        ratios[2].append(round(two["rps"] / embedded, 3))
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_generator": load.name,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rows": rows,
        "scaled_1_over_embedded": ratios[1],  # one figure per round
        "scaled_2_over_embedded": ratios[2],
        "scaled_1_over_embedded_median": round(statistics.median(ratios[1]), 3),
        "scaled_2_over_embedded_median": round(statistics.median(ratios[2]), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--database-server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the four runs; ratios per round")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console()
    result = run(args, console)
    table = Table(title=f"scaled out at c={args.concurrency}, limits on ({result['load_generator']})")
    for column in ("stack", "workers", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "postgres µs/req", "redis µs/req"):
        table.add_column(column, justify="right")
    for r in result["rows"]:
        cells = (
            r["rps"],
            r["p50_ms"],
            r["p99_ms"],
            r["cpu_us_per_request"],
            r["postgres_cpu_us_per_request"],
            r["redis_cpu_us_per_request"],
        )
        table.add_row(r["stack"], str(r["workers"]), *(f"{c:,}" if isinstance(c, int) else str(c) for c in cells))
    console.print(table)
    console.print(
        f"PostgreSQL + Redis over embedded, by round: 1 worker {result['scaled_1_over_embedded']} "
        f"(median {result['scaled_1_over_embedded_median']}; target >= 0.85), "
        f"2 workers {result['scaled_2_over_embedded']} (median {result['scaled_2_over_embedded_median']})"
    )
    write_results("scaled", result, args.out, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
