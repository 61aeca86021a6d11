"""Store-level timings of the report queries on a big ledger, for bench/ledger_scale.py.

Each case runs `repeat` times on the real SQLiteStore (each report opens its own connection, as
in production); p50, p95 and max are nearest-rank over those runs. A case whose first run is
slow runs fewer times, within `budget_s` per case, and says how many.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buzz import reports
from buzz.billing.pricing import PriceBook
from buzz.store import sqlite_reports
from buzz.store.sqlite import SQLiteStore

RANGES = (("24h", "hour"), ("7d", "day"), ("30d", "day"), ("90d", "day"))
BYS = ("model", "key", "user", "tag:feature", "project", "status")
ZONES = ("UTC", "Asia/Kolkata")
SLOW_S = 0.5  # what the lead wants to hear about at once
TARGET_S = 1.0  # the target, at p95


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
    run: Callable[[], int]  # returns how many lines or rows it answered with
    plan: Callable[[], list[tuple[str, list[str]]]] | None = None  # (SQL, EXPLAIN QUERY PLAN) per statement


def cases(store: SQLiteStore, path: Path, now: float, who: Subjects, prices: PriceBook) -> list[Case]:
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
                    out.append(
                        Case(
                            "usage_report",
                            f"{range_name}/{bucket} by={by} {view} {tz}",
                            params | ({"member": member} if member else {}),
                            _usage(store, query),
                            _plan(path, query),
                        )
                    )
    for view, member in (("all", None), ("member", who.project)):
        query = reports.parse_query({"range": "30d"}, now, member)
        out.append(
            Case(
                "cache_report",
                f"30d {view}",
                {"range": "30d"},
                lambda q=query: len(reports.cache_report(store, q, prices)),
                _plan(path, query, "provider_model"),
            )
        )
        out.append(
            Case(
                "tag_keys",
                f"30d {view}",
                {"range": "30d"},
                lambda q=query: len(store.tag_keys(q.since, q.until, q.filters.project)),
                _trace(path, lambda conn, q=query: sqlite_reports.tag_keys(conn, q.since, q.until, q.filters.project)),
            )
        )
        out.append(
            Case(
                "last_used",
                view,
                {},
                lambda p=member: len(store.last_used(p)),
                _trace(path, lambda conn, p=member: sqlite_reports.last_used(conn, p)),
            )
        )
    for range_name, bucket in RANGES[:3]:
        for view, member in (("member", who.project), ("all", None)):
            params = {**_range_params(range_name, bucket), "by": "tag:feature", "user": who.user_id}
            query = reports.parse_query(params, now, member)
            out.append(
                Case(
                    "raw fallback",
                    f"{range_name}/{bucket} user + by=tag:feature {view}",
                    params | ({"member": member} if member else {}),
                    _usage(store, query),
                    _plan(path, query),
                )
            )
    return out


def _usage(store: SQLiteStore, query: reports.Query) -> Callable[[], int]:
    def run() -> int:
        report = reports.usage_report(store, query)
        return len(report.groups)

    return run


def _plan(path: Path, query: reports.Query, by: Any = None) -> Callable[[], list[tuple[str, list[str]]]]:
    dimension = by if by is not None else query.by

    def read(conn: sqlite3.Connection) -> None:
        sqlite_reports.rollup(conn, query.since, query.until, query.filters, dimension, query.tag_key)
        if query.by == "tag" and by is None:  # the report also reads the unsplit totals
            sqlite_reports.rollup(conn, query.since, query.until, query.filters, None, None)

    return _trace(path, read)


def _trace(path: Path, read: Callable[[sqlite3.Connection], object]) -> Callable[[], list[tuple[str, list[str]]]]:
    """The statements `read` runs, with their bound values, and SQLite's plan for each."""

    def plans() -> list[tuple[str, list[str]]]:
        statements: list[str] = []
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            conn.set_trace_callback(statements.append)
            read(conn)
            conn.set_trace_callback(None)
            out = []
            for sql in statements:
                rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
                out.append((sql, [f"{'  ' * _depth(rows, r)}{r[3]}" for r in rows]))
        return out

    return plans


def _depth(rows: list[tuple[int, int, int, str]], row: tuple[int, int, int, str]) -> int:
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent in parents:
        depth, parent = depth + 1, parents[parent]
    return depth


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def time_case(case: Case, repeat: int, budget_s: float) -> dict[str, Any]:
    seconds: list[float] = []
    answered = 0
    while len(seconds) < repeat:
        started = time.perf_counter()
        answered = case.run()
        seconds.append(time.perf_counter() - started)
        if len(seconds) >= 3 and sum(seconds) > budget_s:
            break
    result: dict[str, Any] = {
        "group": case.group,
        "name": case.name,
        "params": case.params,
        "runs": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 2),
        "p95_ms": round(percentile(seconds, 95) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
        "answered": answered,
    }
    if percentile(seconds, 95) > SLOW_S and case.plan is not None:
        result["plans"] = [{"sql": sql, "plan": plan} for sql, plan in case.plan()]
    return result
