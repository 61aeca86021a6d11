"""The ledger at scale: report queries, exports and console pages on ten million ledger rows.

    python bench/ledger_scale.py [--rows 10000000] [--days 90] [--repeat 20] [--data-dir DIR]

1. Makes a realistic ledger (bench/ledger_gen.py states its distribution) through the real
   store's `write_ledger`, in batches, so the rollups are kept exactly as in production, and
   reports the rows/s (rollup upkeep included), the size on disk and the rollups' row counts.
   The database is kept in the data directory and reused by the next run with the same
   parameters (`--regenerate` makes a new one).
2. Times every report query at the store: `reports.usage_report` per range, split, view (all
   projects, a member's project, one key) and time zone; `cache_report`, `tag_keys`,
   `last_used`; and, apart, a user with a tag split, which no rollup holds. Each case says
   whether the store read raw ledger rows. Queries are made by `reports.parse_query` with `now`
   at the ledger's end. Any query over 0.5 s at p95 is listed with SQLite's plan for each of its
   statements.
3. Export throughput: `store.export_rows` over the last 30 days, all projects and one project,
   then the CSV and JSON lines the export endpoints send (`buzz.export.lines`), each in a
   process of its own (rows/s, peak VmRSS growth).
4. Console pages, `/admin/api/usage` and its export through a real `buzz serve`, as the
   operator and as a member (pages not built yet are skipped and named), the server's VmRSS
   sampled meanwhile.

Prints tables and writes a JSON file (default bench/results/ledger-scale-<time>.json).
docs/performance.md ("A ledger of ten million rows") has the figures of a full run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import ledger_data
import ledger_http
import ledger_queries as lq
from buzz import reports
from buzz.billing.pricing import PriceBook
from procs import ROOT, machine

BENCH_DIR = Path(__file__).resolve().parent


def _export_kind(path: str) -> str:
    """ "csv, UTC" from an export's path."""
    params = dict(parse_qsl(path.partition("?")[2]))
    return f"{params.get('format', 'csv')}, {params.get('tz', 'UTC')}"


def _revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False).stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    return revision + (" (with uncommitted changes)" if git("status", "--porcelain", "--", "src") else "")


def queries(
    path: Path,
    end: float,
    repeat: int,
    budget_s: float,
    pick: re.Pattern[str] | None,
    console: Console,
    into: dict[str, Any],
) -> None:
    """Times every case into `into`, case by case, so an interrupted run keeps what it measured."""
    who = lq.subjects(path)
    into["subjects"] = {"project": who.project, "key": who.key_id, "user": who.user_id}
    results: list[dict[str, Any]] = into["cases"]
    console.print(f"store-level queries, {repeat} runs each (fewer past {budget_s:.0f} s); the member's "
                  f"project {who.project}, the key {who.key_id}, the user {who.user_id}")  # fmt: skip
    store = lq.TracingStore(path)
    try:
        for case in lq.cases(end, who, PriceBook()):
            if pick is not None and not pick.search(f"{case.group} {case.name}"):
                continue
            result = lq.time_case(case, store, path, repeat, budget_s)
            results.append(result)
            flag = " [red]SLOW[/]" if result["p95_ms"] > lq.SLOW_S * 1000 else ""
            raw = " (raw rows)" if result["reads_raw_rows"] else ""
            console.print(
                f"  {case.group:<13} {escape(case.name):<52} p50 {result['p50_ms']:>9,.1f} ms  "
                f"p95 {result['p95_ms']:>9,.1f} ms  ({result['runs']} runs){raw}{flag}"
            )
    finally:
        store.close()


def exports(path: Path, end: float, project: str, console: Console) -> list[dict[str, Any]]:
    """The last 30 days of the ledger: the store's rows as they come, for every project and for
    the busiest one, then all of them as CSV and as JSON lines as the export endpoints send them
    (`buzz.export.lines`)."""
    query = reports.parse_query({"range": "30d"}, end, None)
    out = []
    for view, member, fmt in (("all projects", None, None), (f"project {project}", project, None),
                              ("all projects", None, "csv"), ("all projects", None, "jsonl")):  # fmt: skip
        argv = [sys.executable, str(BENCH_DIR / "ledger_export.py"), str(path), str(query.since), str(query.until)]
        argv += ["--project", member] if member else []
        argv += ["--format", fmt] if fmt else []
        proc = subprocess.run(argv, capture_output=True, text=True, check=True, env=os.environ)
        result = json.loads(proc.stdout.strip().splitlines()[-1]) | {"view": view, "range": "30d"}
        what = f"as {fmt}" if fmt else "export_rows"
        size = f", {result['bytes'] / 2**20:,.0f} MiB" if result["bytes"] else ""
        console.print(
            f"  {what}, 30 days, {view}: {result['rows']:,} rows in {result['seconds']} s = "
            f"{result['rows_per_s']:,} rows/s{size}; VmRSS {result['rss_before_kib'] / 1024:.1f} -> peak "
            f"{result['rss_peak_kib'] / 1024:.1f} MiB"
        )
        out.append(result)
    return out


def show(console: Console, results: dict[str, Any]) -> None:
    data = results["data"]
    gen = results["generation"]
    console.print(
        f"ledger: {data['rows']['ledger']:,} rows, {data['bytes_on_disk'] / 2**30:.2f} GiB on disk; made at "
        f"{gen['rows_per_s']:,} rows/s overall, {gen['write_rows_per_s']:,} rows/s inside write_ledger"
        + (" (reused)" if gen["reused"] else "")
    )
    console.print("rollups: " + ", ".join(f"{t} {n:,} rows" for t, n in data["rows"].items() if t != "ledger"))
    cases = results["queries"]["cases"]
    table = Table(title="usage_report p95 ms (p50 in brackets; raw: the store reads raw ledger rows)")
    table.add_column("range / split")
    columns = [(view, tz) for view in ("all", "member", "key") for tz in lq.ZONES]
    for view, tz in columns:
        table.add_column(f"{view} {tz}", justify="right")
    by_name = {c["name"]: c for c in cases if c["group"] == "usage_report"}
    for range_name, bucket in lq.RANGES:
        for by in lq.BYS:
            cells = []
            for view, tz in columns:
                c = by_name.get(f"{range_name}/{bucket} by={by} {view} {tz}")
                if c is None:  # not timed in this run (--cases)
                    cells.append("-")
                    continue
                over_target, over_slow = c["p95_ms"] > lq.TARGET_S * 1000, c["p95_ms"] > lq.SLOW_S * 1000
                style = "red" if over_target else "yellow" if over_slow else ""
                text = f"{c['p95_ms']:,.0f} ({c['p50_ms']:,.0f})" + (" raw" if c["reads_raw_rows"] else "")
                cells.append(f"[{style}]{text}[/]" if style else text)
            table.add_row(f"{range_name}/{bucket} by={by}", *cells)
    console.print(table)
    other = Table(title="Other store queries, and the raw fallback (a user and a tag split: raw rows)")
    for column in ("query", "case", "reads", "runs", "p50 ms", "p95 ms", "max ms"):
        other.add_column(column, justify="left" if column in ("query", "case", "reads") else "right")
    for c in cases:
        if c["group"] != "usage_report":
            reads = "raw rows" if c["reads_raw_rows"] else "rollups"
            timings = (f"{c[name]:,.1f}" for name in ("p50_ms", "p95_ms", "max_ms"))
            other.add_row(c["group"], c["name"], reads, str(c["runs"]), *timings)
    console.print(other)
    slow = [c for c in cases if c["p95_ms"] > lq.SLOW_S * 1000]
    console.print(f"[bold]{len(slow)} of {len(cases)} queries over {lq.SLOW_S} s at p95[/]")
    shown: set[str] = set()
    for c in slow:
        for plan in c.get("plans", []):
            key = "\n".join(plan["plan"])
            if key in shown:
                continue
            shown.add(key)
            console.print(f"[yellow]{c['group']} {escape(c['name'])}[/]: {escape(plan['sql'])}")
            console.print(escape(key))
    for e in results["export"]:
        console.print(
            f"{'as ' + e['format'] if e['format'] else 'export_rows'} {e['range']} {e['view']}: "
            f"{e['rows_per_s']:,} rows/s, VmRSS growth {e['rss_growth_kib'] / 1024:+.1f} MiB"
        )
    web = results.get("http", {})
    for line in web.get("skipped", []):
        console.print(f"[yellow]skipped: {line}[/]")
    if web.get("pages"):
        pages = Table(title="Over HTTP (buzz serve on the same data)")
        for column in ("who", "path", "status", "p50 ms", "p95 ms", "max ms", "server peak RSS MiB"):
            pages.add_column(column)
        for p in web["pages"]:
            peak = p.get("server_peak_rss_kib")
            timings = (f"{p[name]:,.1f}" for name in ("p50_ms", "p95_ms", "max_ms"))
            status = ",".join(map(str, p["statuses"]))
            pages.add_row(p["who"], p["path"], status, *timings, f"{peak / 1024:.0f}" if peak else "-")
        console.print(pages)
    for e in web.get("exports", []):
        console.print(
            f"HTTP export, {e['who']}, {_export_kind(e['path'])}: {e['rows']:,} rows in {e['seconds']} s "
            f"= {e['rows_per_s']:,} rows/s "
            f"({e['mib_per_s']} MiB/s, HTTP {e['status']}); server peak RSS {e['server_peak_rss_kib'] / 1024:.0f} MiB"
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=10_000, help="rows per write_ledger call")
    parser.add_argument("--data-dir", type=Path, default=None, help="default bench/results/ledger-scale-<params>")
    parser.add_argument("--regenerate", action="store_true", help="make a new ledger even if one is cached")
    parser.add_argument("--repeat", type=int, default=20, help="runs per query")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per query before fewer runs")
    parser.add_argument("--skip", action="append", default=[], choices=("queries", "export", "http"))
    parser.add_argument("--cases", type=re.compile, default=None, help="time only the queries whose name matches")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    started_at = datetime.now(UTC)
    data_dir: Path = args.data_dir or BENCH_DIR / "results" / f"ledger-scale-{args.rows}-{args.days}d-s{args.seed}"
    out: Path = args.out or BENCH_DIR / "results" / f"ledger-scale-{started_at:%Y%m%d-%H%M%S}.json"
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(width=None if sys.stdout.isatty() else 150)
    results: dict[str, Any] = {
        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "buzz_revision": _revision(),
        "sqlite": __import__("sqlite3").sqlite_version,
    }
    status = 0
    try:
        params = ledger_data.Params(args.rows, args.days, args.seed, args.batch)
        results["generation"] = ledger_data.ensure(data_dir, params, console, args.regenerate)
        results["data"] = ledger_data.describe(data_dir)
        path, end = ledger_data.database(data_dir), results["generation"]["end"]
        results["queries"] = {"cases": []}
        if "queries" not in args.skip:
            queries(path, end, args.repeat, args.budget, args.cases, console, results["queries"])
        project = lq.subjects(path).project
        results["export"] = [] if "export" in args.skip else exports(path, end, project, console)
        if "http" not in args.skip:
            with tempfile.TemporaryDirectory(prefix="buzz-ledger-") as tmp, contextlib.ExitStack() as stack:
                results["http"] = ledger_http.measure(data_dir, project, end, args.repeat, Path(tmp), stack)
    except KeyboardInterrupt:
        console.print("[red]interrupted: the figures so far are written[/]")
        results["interrupted"], status = True, 130
    results["loadavg_at_end"] = os.getloadavg()
    results["elapsed_s"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if status == 0:
        show(console, results)
    shown = data_dir.relative_to(ROOT) if data_dir.is_relative_to(ROOT) else data_dir
    console.print(f"results written to {out} ({results['elapsed_s']:.0f} s; the ledger is kept in {shown})")
    return status


if __name__ == "__main__":
    sys.exit(main())
