"""Store-level timings of the report queries on a big ledger, for bench/ledger_scale.py.

Each case runs once, traced and untimed (which statements it runs, whether it reads raw ledger
rows), then `repeat` times on the real SQLiteStore (each report opens its own connection, as in
production); p50, p95 and max are nearest-rank over those runs. A slow case runs fewer times:
past `budget_s`, after three runs, or after one that alone took longer; it says how many.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buzz import reports
from buzz.billing.pricing import PriceBook
from buzz.store.sqlite import SQLiteStore

RANGES = (("24h", "hour"), ("7d", "day"), ("30d", "day"), ("90d", "day"))
BYS = ("model", "key", "user", "tag:feature", "project", "status")
ZONES = ("UTC", "Asia/Kolkata")
SLOW_S = 0.5  # a query slower than this at p95 is listed with its plan
TARGET_S = 1.0  # the target for every report and page, at p95 (docs/performance.md)
_LEDGER = re.compile(r"\bledger\b")  # a statement that names the raw table (the rollups are rollup_*)


@dataclass(frozen=True, slots=True)
class Subjects:
    """Whom the filtered views look at: the busiest project, its busiest key and user."""

    project: str
    key_id: str
    user_id: str


def subjects(path: Path) -> Subjects:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        (project,) = conn.execute(
            "SELECT project FROM rollup GROUP BY project ORDER BY sum(requests) DESC LIMIT 1"
        ).fetchone()
        (key_id,) = conn.execute(
            "SELECT key_id FROM rollup WHERE project = ? GROUP BY key_id ORDER BY sum(requests) DESC LIMIT 1",
            (project,),
        ).fetchone()
        (user_id,) = conn.execute(
            "SELECT user_id FROM rollup_user WHERE project = ? AND user_id != '' "
            "GROUP BY user_id ORDER BY sum(requests) DESC LIMIT 1",
            (project,),
        ).fetchone()
    return Subjects(project, key_id, user_id)


def _range_params(name: str, bucket: str) -> dict[str, str]:
    # The console offers 24h, 7d and 30d; a longer range is a custom one, "since=90d".
    if name in reports.RANGES:
        return {"range": name, "bucket": bucket}
    return {"range": "custom", "since": name, "bucket": bucket}


@dataclass
class Case:
    group: str  # "usage_report", "cache_report", ..., "raw fallback"
    name: str
    params: dict[str, str]
    run: Callable[[SQLiteStore], int]  # returns how many lines or rows it answered with
    query: reports.Query | None = None  # a usage report's: the raw rows it walks are noted


class TracingStore(SQLiteStore):
    """The store as production has it, noting each statement its report connections run, so a
    case can say whether it read raw rows and show SQLite's plan for what it ran."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.statements: list[str] = []

    def _reader(self) -> closing[sqlite3.Connection]:
        reader = super()._reader()  # the connection exactly as the store opens it for a report
        reader.thing.set_trace_callback(self.statements.append)
        return reader


def cases(now: float, who: Subjects, prices: PriceBook) -> list[Case]:
    out: list[Case] = []
    views: tuple[tuple[str, dict[str, str], str | None], ...] = (
        ("all", {}, None),
        ("member", {}, who.project),  # a member of the busiest project: forced by parse_query
        ("key", {"key": who.key_id}, None),
    )
    for range_name, bucket in RANGES:
        for by in BYS:
            for view, extra, member in views:
                for tz in ZONES:
                    params = {**_range_params(range_name, bucket), "by": by, "tz": tz, **extra}
                    query = reports.parse_query(params, now, member)
                    name = f"{range_name}/{bucket} by={by} {view} {tz}"
                    out.append(Case("usage_report", name, _with(params, member), _usage(query), query))
    for view, member in (("all", None), ("member", who.project)):
        query = reports.parse_query({"range": "30d"}, now, member)
        out.append(
            Case(
                "cache_report",
                f"30d {view}",
                _with({"range": "30d"}, member),
                lambda store, q=query: len(reports.cache_report(store, q, prices)),
            )
        )
        out.append(
            Case(
                "tag_keys",
                f"30d {view}",
                _with({"range": "30d"}, member),
                lambda store, q=query: len(store.tag_keys(q.since, q.until, q.filters.project)),
            )
        )
        out.append(Case("last_used", view, _with({}, member), lambda store, p=member: len(store.last_used(p))))
    for range_name, bucket in RANGES[:3]:
        for view, member in (("member", who.project), ("all", None)):
            params = {**_range_params(range_name, bucket), "by": "tag:feature", "user": who.user_id}
            query = reports.parse_query(params, now, member)
            name = f"{range_name}/{bucket} user + by=tag:feature {view}"
            out.append(Case("raw fallback", name, _with(params, member), _usage(query), query))
    return out


def _with(params: dict[str, str], member: str | None) -> dict[str, str]:
    return params | ({"member": member} if member else {})


def _usage(query: reports.Query) -> Callable[[SQLiteStore], int]:
    def run(store: SQLiteStore) -> int:
        return len(reports.usage_report(store, query).groups)

    return run


def plans(path: Path, statements: list[str]) -> list[dict[str, Any]]:
    """SQLite's plan for each statement (run with its values bound, as traced)."""
    out = []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        for sql in statements:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            out.append({"sql": sql, "plan": [f"{'  ' * _depth(rows, r)}{r[3]}" for r in rows]})
    return out


def reads_raw_rows(statements: list[str]) -> bool:
    return any(_LEDGER.search(sql) for sql in statements)


def _depth(rows: list[tuple[int, int, int, str]], row: tuple[int, int, int, str]) -> int:
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent in parents:
        depth, parent = depth + 1, parents[parent]
    return depth


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def time_case(case: Case, store: TracingStore, path: Path, repeat: int, budget_s: float) -> dict[str, Any]:
    # One traced run first, untimed: what the case reads (and a warm start for the timed runs).
    store.statements.clear()
    case.run(store)
    statements = list(store.statements)
    seconds: list[float] = []
    answered = 0
    while len(seconds) < repeat:
        started = time.perf_counter()
        answered = case.run(store)
        seconds.append(time.perf_counter() - started)
        # At least three runs, unless one run alone takes the whole budget.
        if (len(seconds) >= 3 or seconds[0] > budget_s) and sum(seconds) > budget_s:
            break
    raw = reads_raw_rows(statements)
    result: dict[str, Any] = {
        "group": case.group,
        "name": case.name,
        "params": case.params,
        "reads_raw_rows": raw,
        "statements": len(statements),
        "runs": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 2),
        "p95_ms": round(percentile(seconds, 95) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
        "answered": answered,
    }
    if raw and case.query is not None:
        # What the console and the usage API weigh against reports.raw_rows_limit (they refuse
        # the report past it; the store-level time here is what `buzz usage` takes).
        result["raw_rows_walked"] = sum(reports.raw_reads(store, case.query))
    if percentile(seconds, 95) > SLOW_S:
        result["plans"] = plans(path, statements)
    return result
