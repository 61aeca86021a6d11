"""Export throughput on a big ledger, in a process of its own so its memory is its own.

    python bench/ledger_export.py DATABASE SINCE UNTIL [--project P] [--format csv|jsonl]

Iterates `store.export_rows` over [SINCE, UNTIL) (unix seconds) and prints one JSON line: rows,
seconds, rows/s, and VmRSS before, at its highest (sampled after every batch) and after. With
`--format`, it reads `buzz.export.lines` instead, the bytes the export endpoints send (rendered
by the store), and counts them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

from buzz import export
from buzz.billing.ledger import LedgerRow
from buzz.store.sqlite import SQLiteStore


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("database", type=Path)
    parser.add_argument("since", type=int)
    parser.add_argument("until", type=int)
    parser.add_argument("--project", default=None)
    parser.add_argument("--format", choices=("csv", "jsonl"), default=None)
    args = parser.parse_args(argv)
    store = SQLiteStore(args.database)
    before = peak = rss_kib()
    rows = size = 0

    def batches() -> Iterator[list[LedgerRow]]:
        nonlocal rows, peak
        for batch in store.export_rows(args.since, args.until, args.project, None):
            rows += len(batch)
            peak = max(peak, rss_kib())
            yield batch

    started = time.perf_counter()
    if args.format is None:
        for _ in batches():
            pass
    else:
        query = export.ExportQuery(args.since, args.until, args.project, None, args.format, UTC)
        for piece in export.lines(store, query):
            size += len(piece)
            rows += piece.count(b"\n")
            peak = max(peak, rss_kib())
        rows -= args.format == "csv"  # the header
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {
        "format": args.format,
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds) if seconds else None,
        "bytes": size or None,
        "rss_before_kib": before,
        "rss_peak_kib": peak,
        "rss_after_kib": rss_kib(),
        "rss_growth_kib": peak - before,
    }
    store.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
