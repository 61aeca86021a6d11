"""The tables of a bench/ledger_scale.py run as Markdown, for docs/performance.md.

    python bench/ledger_markdown.py bench/results/ledger-scale-<time>.json [more.json ...]

With several files, later files' query cases replace earlier ones of the same name (a full run,
then a run of `--cases` after a change); every file is named under the tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import ledger_queries as lq

COLUMNS = [(view, tz) for view in ("all", "member", "key") for tz in lq.ZONES]
_VIEW = {"all": "all projects", "member": "a member", "key": "one key"}


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def usage_table(cases: dict[str, dict[str, Any]]) -> list[str]:
    head = "| range / split | " + " | ".join(f"{_VIEW[v]}, {tz}" for v, tz in COLUMNS) + " |"
    lines = [head, "|---|" + "---:|" * len(COLUMNS)]
    for range_name, bucket in lq.RANGES:
        for by in lq.BYS:
            cells = []
            for view, tz in COLUMNS:
                c = cases.get(f"usage_report {range_name}/{bucket} by={by} {view} {tz}")
                if c is None:
                    cells.append("-")
                    continue
                text = _ms(c["p95_ms"]) + (" (raw)" if c["reads_raw_rows"] else "")
                cells.append(f"**{text}**" if c["p95_ms"] > lq.TARGET_S * 1000 else text)
            lines.append(f"| {range_name}, by {by} | " + " | ".join(cells) + " |")
    return lines


def other_table(cases: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| query | case | reads | runs | p50 ms | p95 ms | max ms |", "|---|---|---|---:|---:|---:|---:|"]
    for c in cases.values():
        if c["group"] == "usage_report":
            continue
        reads = "raw rows" if c["reads_raw_rows"] else "rollups"
        timings = " | ".join(_ms(c[name]) for name in ("p50_ms", "p95_ms", "max_ms"))
        lines.append(f"| {c['group']} | {c['name']} | {reads} | {c['runs']} | {timings} |")
    return lines


def _kind(path: str) -> str:
    params = dict(parse_qsl(path.partition("?")[2]))
    return f"{params.get('format', 'csv')}, {params.get('tz', 'UTC')}"


def main(paths: list[str]) -> int:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    cases: dict[str, dict[str, Any]] = {}
    for run in runs:
        for c in run.get("queries", {}).get("cases", []):
            cases[f"{c['group']} {c['name']}"] = c
    print("\n".join(usage_table(cases)))
    print()
    print("\n".join(other_table(cases)))
    first = runs[0]
    if first.get("export"):
        print()
        print("| export | rows | seconds | rows/s | MiB | VmRSS growth |")
        print("|---|---:|---:|---:|---:|---:|")
        for e in first["export"]:
            what = f"`export.lines` as {e['format']}" if e.get("format") else "`export_rows`"
            size = f"{e['bytes'] / 2**20:,.0f}" if e.get("bytes") else "-"
            print(
                f"| {what}, 30 days, {e['view']} | {e['rows']:,} | {e['seconds']} | {e['rows_per_s']:,} | "
                f"{size} | {e['rss_growth_kib'] / 1024:+.1f} MiB |"
            )
    web = first.get("http", {})
    if web.get("pages"):
        print()
        print("| who | path | status | p50 ms | p95 ms | max ms | server RSS MiB |")
        print("|---|---|---|---:|---:|---:|---:|")
        for p in web["pages"]:
            peak = p.get("server_peak_rss_kib")
            rss = f"{peak / 1024:.0f}" if peak else "-"
            status = ",".join(map(str, p["statuses"]))
            timings = " | ".join(_ms(p[name]) for name in ("p50_ms", "p95_ms", "max_ms"))
            print(f"| {p['who']} | `{p['path']}` | {status} | {timings} | {rss} |")
    for e in web.get("exports", []):
        print(
            f"\nHTTP export ({e['who']}, `{e['path'].split('?')[0]}`, {_kind(e['path'])}): "
            f"{e['rows']:,} rows, {e['bytes'] / 2**20:,.0f} MiB in {e['seconds']} s = {e['rows_per_s']:,} rows/s; "
            f"server peak RSS {e['server_peak_rss_kib'] / 1024:.0f} MiB"
        )
    for run, path in zip(runs, paths, strict=True):
        print(f"\n{path}: revision {run['buzz_revision']}, started {run['started_at']}, {run['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
