"""The rollups against the raw rows they sum, on both real stores (SQLite and PostgreSQL): every dimension and filter,
the raw-row fallback, a ledger that predates the rollups, retention, and the regrouping of
quarter hours into a time zone's hours and days."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from buzz import reports
from buzz.billing.ledger import LedgerRow
from buzz.billing.pricing import PriceBook
from buzz.retention import Retention
from buzz.store.base import Bucketing, Filters, RollupLine, Store, Totals
from buzz.store.sqlite import SQLiteStore
from stores import BACKENDS, Postgres, open_backend
from support import Clock

START = int(datetime(2026, 3, 9, tzinfo=UTC).timestamp())
FIELDS = Totals.__slots__


def _rows(count: int, seed: int = 7) -> list[LedgerRow]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        status = rng.choice([200] * 8 + [400, 429, 500, 529])
        priced = rng.random() > 0.1
        source = rng.choice(["reported"] * 6 + ["estimated", "none"])
        tags = tuple(rng.sample(["feature=search", "feature=chat", "team=ml", "team=web", "plain"], rng.randint(0, 3)))
        cost = rng.randint(0, 10_000)
        rows.append(
            LedgerRow(
                id=f"req_{i:06d}",
                ts=START + i * 97.123 % (3 * 86400) + rng.random(),
                surface=rng.choice(["anthropic", "openai"]),
                status=status,
                usage_source=source,
                latency_ms=1.5,
                key_id=rng.choice(["k1", "k2", "k3", None]),
                project=rng.choice(["acme", "globex", None]),
                user_id=rng.choice(["u1", "u2", "Zoë", None]),
                tags=tags,
                provider=rng.choice(["anthropic", "openai"]),
                model=rng.choice(["claude-haiku-4-5", "gpt-4o", None]),
                input_tokens=rng.randint(0, 5000),
                output_tokens=rng.randint(0, 900),
                cache_write_5m_tokens=rng.randint(0, 100),
                cache_write_1h_tokens=rng.randint(0, 100),
                cache_read_tokens=rng.randint(0, 3000),
                cost_nanos=cost if priced else None,
                list_cost_nanos=cost * 2 if priced else None,
            )
        )
    return rows


def _totals(row: LedgerRow) -> Totals:
    return Totals(
        requests=1,
        errors=int(row.status >= 400),
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cache_write_5m_tokens=row.cache_write_5m_tokens,
        cache_write_1h_tokens=row.cache_write_1h_tokens,
        cache_read_tokens=row.cache_read_tokens,
        cost_nanos=row.cost_nanos or 0,
        list_cost_nanos=row.list_cost_nanos or 0,
        unpriced=int(row.cost_nanos is None and row.usage_source != "none"),
        estimated=int(row.usage_source == "estimated"),
    )


def _tag_split(tag: str) -> tuple[str, str]:
    name, sep, value = tag.partition("=")
    return (name, value) if sep else ("", tag)


def _groups(row: LedgerRow, by: str | None, tag_key: str | None) -> list[str]:
    values: dict[str, str | None] = {
        "model": row.model,
        "provider": row.provider,
        "key": row.key_id,
        "user": row.user_id,
        "project": row.project,
        "surface": row.surface,
        "status": f"{row.status // 100}xx",
        "provider_model": f"{row.provider or ''}\x1f{row.model or ''}",
    }
    if by is None:
        return [""]
    if by == "tag_key":
        return sorted({_tag_split(t)[0] for t in row.tags})
    if by == "tag":
        if tag_key is None:
            return list(row.tags)
        return [_tag_split(t)[1] for t in row.tags if _tag_split(t)[0] == tag_key]
    return [values[by] or ""]


def _key(ts: float, bucketing: Bucketing | None) -> int:
    """The bucket key the store gives a row, worked out independently: by UTC hour or local day."""
    if bucketing is None:
        return 0
    [(_, offset)] = bucketing.offsets
    if bucketing.length == 3600:
        return int(ts) // 3600 * 3600
    return (int(ts) + offset) // 86400


def _expected(
    rows: list[LedgerRow],
    since: int,
    until: int,
    f: Filters,
    by: str | None,
    tag_key: str | None,
    bucketing: Bucketing | None = None,
) -> dict[tuple[int, str], Totals]:
    out: dict[tuple[int, str], Totals] = defaultdict(Totals)
    for row in rows:
        if not since <= row.ts < until:
            continue
        if any(
            wanted is not None and wanted != actual
            for wanted, actual in (
                (f.project, row.project),
                (f.key_id, row.key_id),
                (f.model, row.model),
                (f.user_id, row.user_id),
                (f.status_class, row.status // 100),
            )
        ):
            continue
        if f.tag is not None and f.tag not in row.tags:
            continue
        bucket = _key(row.ts, bucketing)
        for group in _groups(row, by, tag_key):
            out[(bucket, group)].add(_totals(row))
    return dict(out)


def _actual(lines: list[RollupLine]) -> dict[tuple[int, str], Totals]:
    out: dict[tuple[int, str], Totals] = defaultdict(Totals)
    for line in lines:
        out[(line.bucket, line.group)].add(line.totals)
    return dict(out)


@pytest.fixture(scope="module", params=BACKENDS)
def written(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres: Postgres
) -> Iterator[tuple[Store, list[LedgerRow]]]:
    store = open_backend(request.param, tmp_path_factory.mktemp("rollups"), postgres)
    rows = sorted(_rows(3000), key=lambda r: r.ts)
    for start in range(0, len(rows), 250):  # batches, as the ledger writer hands them over
        store.write_ledger(rows[start : start + 250])
    yield store, rows
    store.close()


CASES: list[tuple[Filters, str | None, str | None]] = [
    (Filters(), None, None),
    *[(Filters(), by, None) for by in ("model", "provider", "key", "user", "project", "surface", "status")],
    (Filters(), "provider_model", None),
    (Filters(), "tag", "feature"),
    (Filters(), "tag", ""),  # tags without "="
    (Filters(), "tag", None),  # whole tags
    (Filters(), "tag_key", None),  # each request once per key
    (Filters(key_id="k1"), "tag_key", None),
    (Filters(project="acme"), "model", None),
    (Filters(project="globex", key_id="k2"), "user", None),
    (Filters(model="gpt-4o", status_class=5), "key", None),
    (Filters(user_id="Zoë"), "project", None),
    (Filters(tag="team=ml"), "model", None),
    (Filters(project="acme", tag="feature=chat"), "status", None),
    (Filters(key_id="k1"), "tag", "feature"),
    (Filters(key_id="k3"), "tag", None),
    (Filters(key_id="k2", tag="team=ml"), None, None),
    (Filters(key_id="k2", user_id="u1"), "project", None),
    # What no rollup holds, read from raw rows: a user with a tag, two tags.
    (Filters(user_id="u1"), "tag", "feature"),
    (Filters(tag="team=web"), "user", None),
    (Filters(tag="team=web"), "tag", "feature"),
    (Filters(user_id="u2"), "tag_key", None),
]


BUCKETINGS = {
    "whole range": None,
    "UTC hours": Bucketing(3600, ((0, 0),)),  # read from the hourly span
    "UTC days": Bucketing(86400, ((0, 0),)),  # from the daily span
    "Kolkata days": Bucketing(86400, ((0, 19800),)),  # from quarter hours: the days start at 18:30 UTC
}


@pytest.mark.parametrize("bucketing", BUCKETINGS.values(), ids=BUCKETINGS.keys())
@pytest.mark.parametrize(("filters", "by", "tag_key"), CASES)
def test_the_rollups_equal_sums_over_the_raw_rows(
    written: tuple[Store, list[LedgerRow]],
    filters: Filters,
    by: Any,
    tag_key: str | None,
    bucketing: Bucketing | None,
) -> None:
    store, rows = written
    # A range inside the data: on whole days, or on quarter hours (the finest span).
    since, until = (
        (START + 86400, START + 3 * 86400)
        if bucketing == BUCKETINGS["UTC days"]
        else (START + 6 * 3600 + 900, START + 2 * 86400 + 1800)
    )
    expected = _expected(rows, since, until, filters, by, tag_key, bucketing)
    assert expected  # the case selects something
    assert _actual(store.rollup(since, until, filters, by, tag_key, bucketing)) == expected


def test_tag_keys_and_last_use(written: tuple[Store, list[LedgerRow]]) -> None:
    store, rows = written
    assert set(store.tag_keys(START, START + 4 * 86400, None)) == {"feature", "team"}
    latest: dict[str, float] = {}
    for row in rows:
        if row.key_id is not None:
            latest[row.key_id] = max(latest.get(row.key_id, 0.0), row.ts)
    used = store.last_used(None)
    assert used.keys() == latest.keys()
    for key_id, ts in latest.items():
        assert used[key_id] == pytest.approx(ts, abs=0.001)  # stored to the millisecond


FIRST_ROLLUPS = ("rollup", "rollup_user", "rollup_tag", "rollup_tag_key")  # 0008's
ROLLUPS = (*FIRST_ROLLUPS, "rollup_project")


def _wipe_rollups(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for table in (*ROLLUPS, "key_last_used"):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - constants
        conn.execute("UPDATE rollup_state SET last_rowid = 0")
    conn.close()


def test_a_ledger_older_than_the_rollups_is_added_to_them_at_start(tmp_path: Path) -> None:
    path = tmp_path / "buzz.sqlite3"
    rows = sorted(_rows(500, seed=3), key=lambda r: r.ts)
    store = SQLiteStore(path)
    store.write_ledger(rows)
    store.close()
    _wipe_rollups(path)  # as a ledger written before the rollups existed
    reopened = SQLiteStore(path)
    hours = BUCKETINGS["UTC hours"]
    expected = _expected(rows, START, START + 4 * 86400, Filters(), "key", None, hours)
    assert _actual(reopened.rollup(START, START + 4 * 86400, Filters(), "key", None, hours)) == expected


def test_each_question_goes_to_the_smallest_rollup_that_holds_it() -> None:
    from buzz.store.plan import table_for as _table

    assert _table(Filters(), None) == "rollup_project"
    assert _table(Filters(project="acme"), "project") == "rollup_project"
    assert _table(Filters(), "model") == "rollup"
    assert _table(Filters(project="acme", key_id="k1", status_class=5), "provider_model") == "rollup"
    assert _table(Filters(), "user") == "rollup_user"
    assert _table(Filters(user_id="u1"), "project") == "rollup_user"
    assert _table(Filters(tag="a=b"), None) == "rollup_tag"
    assert _table(Filters(), "tag_key") == "rollup_tag_key"
    # What no rollup holds is read from raw rows: a user or tag with another dimension.
    assert _table(Filters(key_id="k1"), "user") is None
    assert _table(Filters(key_id="k1"), "tag_key") is None
    assert _table(Filters(model="m"), "user") is None
    assert _table(Filters(status_class=5), "tag") is None
    assert _table(Filters(user_id="u1"), "model") is None
    assert _table(Filters(user_id="u1", tag="a=b"), None) is None
    assert _table(Filters(tag="a=b"), "tag") is None
    assert _table(Filters(key_id="k1", tag="a=b"), "tag_key") is None


def _six_hour_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            table: conn.execute(f"SELECT * FROM {table} WHERE span = 21600 ORDER BY 1, 2, 3, 4, 5").fetchall()  # noqa: S608
            for table in FIRST_ROLLUPS
        }
    finally:
        conn.close()


def test_the_six_hour_span_is_summed_from_the_hours_when_a_ledger_from_before_it_opens(tmp_path: Path) -> None:
    path = tmp_path / "buzz.sqlite3"
    store = SQLiteStore(path)
    store.write_ledger(sorted(_rows(500, seed=5), key=lambda r: r.ts))
    store.close()
    folded = _six_hour_rows(path)
    assert all(folded.values())
    conn = sqlite3.connect(path)
    with conn:  # as a database from before migration 0009, its raw rows pruned by retention
        for table in FIRST_ROLLUPS:
            conn.execute(f"DELETE FROM {table} WHERE span = 21600")  # noqa: S608 - constants
        conn.execute("DELETE FROM schema_migrations WHERE version = '0009_six_hour_span.sql'")
        conn.execute("DELETE FROM ledger WHERE rowid < (SELECT max(rowid) FROM ledger)")
    conn.close()
    SQLiteStore(path).close()
    assert _six_hour_rows(path) == folded


def test_the_project_rollup_is_summed_from_the_main_one_when_a_database_from_before_it_opens(tmp_path: Path) -> None:
    path = tmp_path / "buzz.sqlite3"
    store = SQLiteStore(path)
    store.write_ledger(sorted(_rows(500, seed=9), key=lambda r: r.ts))
    store.close()
    read = "SELECT * FROM rollup_project ORDER BY 1, 2, 3"
    conn = sqlite3.connect(path)
    folded = conn.execute(read).fetchall()
    assert {span for _, span, *_ in folded} == {900, 3600, 21600, 86400}
    with conn:  # as a database from before migration 0010, its raw rows pruned by retention
        conn.execute("DROP TABLE rollup_project")
        conn.execute("DELETE FROM schema_migrations WHERE version = '0010_rollup_project.sql'")
        conn.execute("DELETE FROM ledger WHERE rowid < (SELECT max(rowid) FROM ledger)")
    conn.close()
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute(read).fetchall() == folded
    conn.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_retention_deletes_old_rows_in_chunks_and_keeps_every_sum(
    tmp_path: Path, postgres: Postgres, backend: str
) -> None:
    store = open_backend(backend, tmp_path, postgres)
    rows = sorted(_rows(900, seed=5), key=lambda r: r.ts)  # a day of rows
    store.write_ledger(rows)
    hours = BUCKETINGS["UTC hours"]
    before = _actual(store.rollup(START, START + 4 * 86400, Filters(), "model", None, hours))
    clock = Clock(START + 86400 + 43200)  # a day's retention keeps the second half of the day
    removed = asyncio.run(Retention(store, 1, clock, chunk=37).prune())
    cutoff = clock() - 86400
    old = [r for r in rows if r.ts < cutoff]
    assert removed == len(old) > 37 * 3
    left = store.ledger_rows()
    assert [r["id"] for r in left] == [r.id for r in rows if r.ts >= cutoff]
    assert _actual(store.rollup(START, START + 4 * 86400, Filters(), "model", None, hours)) == before
    # Rows written after a pass are added to the rollups as ever.
    late = LedgerRow("req_late", clock(), "anthropic", 200, "reported", 1.0, project="acme", model="m")
    store.write_ledger([late])
    assert store.rollup(int(clock()) - 900, int(clock()) + 900, Filters(project="acme"), "model")[0].group == "m"


def test_retention_never_deletes_the_newest_row(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "buzz.sqlite3")
    store.write_ledger([LedgerRow(f"r{i}", START + i, "anthropic", 200, "reported", 1.0) for i in range(3)])
    assert asyncio.run(Retention(store, 1, Clock(START + 30 * 86400)).prune()) == 2
    store.write_ledger([LedgerRow("r9", START + 40 * 86400, "anthropic", 200, "reported", 1.0, model="m")])
    # The new row took a fresh rowid above the rollups' mark, so it was counted.
    assert sum(line.totals.requests for line in store.rollup(START, START + 50 * 86400, Filters(), None)) == 4


def _report(store: Store, now: float, **params: str) -> reports.UsageReport:
    return reports.usage_report(store, reports.parse_query(params, now, None))


@pytest.mark.parametrize("backend", BACKENDS)
def test_days_and_hours_in_a_time_zone(tmp_path: Path, postgres: Postgres, backend: str) -> None:
    store = open_backend(backend, tmp_path, postgres)
    evening = datetime(2026, 3, 10, 20, 0, tzinfo=UTC).timestamp()  # 01:30 on the 11th in Kolkata
    store.write_ledger([LedgerRow("r1", evening, "anthropic", 200, "reported", 1.0, project="acme", model="m")])
    now = datetime(2026, 3, 12, 12, 0, tzinfo=UTC).timestamp()
    kolkata = _report(store, now, range="7d", tz="Asia/Kolkata")
    [line] = kolkata.groups
    day = kolkata.buckets[[t.requests for t in line.series].index(1)]
    assert day.isoformat() == "2026-03-11T00:00:00+05:30"
    utc = _report(store, now, range="7d")
    [line] = utc.groups
    assert utc.buckets[[t.requests for t in line.series].index(1)].isoformat() == "2026-03-10T00:00:00+00:00"
    assert len(utc.buckets) == 7 and utc.buckets[-1].isoformat() == "2026-03-12T00:00:00+00:00"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_hour_repeated_when_summer_time_ends_is_two_buckets(
    tmp_path: Path, postgres: Postgres, backend: str
) -> None:
    store = open_backend(backend, tmp_path, postgres)
    # Berlin goes back from 03:00+02:00 to 02:00+01:00 at 01:00 UTC on 2026-10-25.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()  # 02:30+02:00
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC).timestamp()  # 02:30+01:00
    store.write_ledger(
        [LedgerRow(f"r{i}", ts, "anthropic", 200, "reported", 1.0) for i, ts in enumerate((first, second))]
    )
    params = {"range": "custom", "since": "2026-10-25", "until": "2026-10-26", "tz": "Europe/Berlin", "bucket": "hour"}
    report = _report(store, second + 86400, **params)
    assert len(report.buckets) == 25  # the day has 25 hours
    [line] = report.groups
    busy = [report.buckets[i].isoformat() for i, t in enumerate(line.series) if t.requests]
    assert busy == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]


def test_a_split_by_tag_key_adds_up_with_its_untagged_line(written: tuple[Store, list[LedgerRow]]) -> None:
    store, rows = written
    now = START + 2 * 86400
    since = datetime.fromtimestamp(START, UTC).isoformat()
    report = _report(store, now, range="custom", since=since, by="tag:feature")
    assert report.total.requests == sum(1 for r in rows if r.ts < now)
    tagged = sum(line.totals.requests for line in report.groups)
    untagged = report.untagged.requests if report.untagged else 0
    with_feature = sum(1 for r in rows if any(t.startswith("feature=") for t in r.tags) and r.ts < now)
    assert tagged >= with_feature  # a request with two features counts under both
    assert untagged == report.total.requests - with_feature


def test_a_member_cannot_widen_a_query() -> None:
    query = reports.parse_query({"project": "globex", "by": "project"}, START, "acme")
    assert query.filters.project == "acme"


def test_a_report_reads_the_coarsest_spans_that_fit_its_buckets() -> None:
    from buzz.store.plan import cover as _cover

    day = START  # midnight UTC
    utc_days, utc_hours = Bucketing(86400, ((0, 0),)), Bucketing(3600, ((0, 0),))
    assert _cover(day, day + 30 * 86400, utc_days) == [(86400, day, day + 30 * 86400)]
    assert _cover(day, day + 30 * 86400, utc_hours) == [(3600, day, day + 30 * 86400)]
    # A total over a range that starts and ends off the day: quarters, hours, days, hours, quarters.
    assert _cover(day - 4500, day + 86400 + 4500, None) == [
        (900, day - 4500, day - 3600),
        (3600, day - 3600, day),
        (86400, day, day + 86400),
        (3600, day + 86400, day + 86400 + 3600),
        (900, day + 86400 + 3600, day + 86400 + 4500),
    ]
    # Kolkata's days start at 18:30 UTC: each is two quarters, five hours, three six-hour rows
    # (00:00 to 18:00 UTC) and two quarters.
    kolkata = _cover(day - 19800, day + 2 * 86400 - 19800, Bucketing(86400, ((0, 19800),)))
    assert [span for span, _, _ in kolkata] == [900, 3600, 21600, 900, 3600, 21600, 900]  # two days' quarters meet
    assert kolkata[2] == (21600, day, day + 18 * 3600)
    assert sum(end - start for _, start, end in kolkata) == 2 * 86400
    # Paris days move an hour with summer time: hours and six-hour rows, never a UTC day.
    change = int(datetime(2026, 3, 29, 1, tzinfo=UTC).timestamp())
    paris = Bucketing(86400, ((0, 3600), (change, 7200)))
    assert {span for span, _, _ in _cover(day - 3600, day + 30 * 86400 - 7200, paris)} == {3600, 21600}


def _mark_and_last(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        (mark,) = conn.execute("SELECT last_rowid FROM rollup_state").fetchone()
        (last,) = conn.execute("SELECT max(rowid) FROM ledger").fetchone()
        return mark, last
    finally:
        conn.close()


def test_the_writer_folds_once_a_second_and_a_report_folds_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "buzz.sqlite3"
    clock = Clock(100.0)
    store = SQLiteStore(path, fold_interval=1.0, clock=clock)
    row = LedgerRow("r1", START, "anthropic", 200, "reported", 1.0, project="acme", model="m", user_id="u")
    store.write_ledger([row])
    assert _mark_and_last(path) == (1, 1)  # the first batch is folded at once
    store.write_ledger([LedgerRow("r2", START + 1, "anthropic", 200, "reported", 1.0, project="acme", tags=("a=b",))])
    assert _mark_and_last(path) == (1, 2)  # within the second: written, not folded yet
    clock.now += 1.0
    store.write_ledger([LedgerRow("r3", START + 2, "anthropic", 200, "reported", 1.0, project="acme")])
    assert _mark_and_last(path) == (3, 3)  # a second on: this batch folds all three
    store.write_ledger([LedgerRow("r4", START + 3, "anthropic", 500, "reported", 1.0, project="acme")])
    assert _mark_and_last(path) == (3, 4)
    # A report folds what the writer has not, first, so it sees every row written.
    [line] = store.rollup(START, START + 900, Filters(project="acme"), None)
    assert (line.totals.requests, line.totals.errors) == (4, 1)
    assert _mark_and_last(path) == (4, 4)
    assert [line.group for line in store.rollup(START, START + 900, Filters(), "tag")] == ["a=b"]
    assert {line.group: line.totals.requests for line in store.rollup(START, START + 900, Filters(), "user")} == {
        "u": 1,
        "": 3,
    }


@pytest.mark.parametrize("key", ["", "k-one"], ids=["from the rollups", "from raw rows, in one read"])
def test_past_the_first_groups_the_series_are_summed_and_still_add_up(tmp_path: Path, key: str) -> None:
    store = SQLiteStore(tmp_path / "buzz.sqlite3")
    rows = [
        LedgerRow(
            f"r{i}",
            START + 3600 * (i % 30) + i,
            "anthropic",
            200,
            "reported",
            1.0,
            project="acme",
            key_id="k-one" if i % 3 else "k-two",
            model="m",
            user_id=None if i % 7 == 0 else f"user-{i % 31:02d}",
            tags=(f"feature=f{i % 25}",),
            cost_nanos=1000 + i,
            list_cost_nanos=2000,
        )
        for i in range(600)
    ]
    store.write_ledger(rows)
    now = START + 2 * 86400
    rows = [r for r in rows if r.key_id == key or not key]
    narrowed = {"key": key} if key else {}
    for by in ("user", "tag:feature"):
        params = {"range": "custom", "since": "2026-03-09", "until": "2026-03-11", "bucket": "hour", "by": by}
        report = _report(store, now, **params, **narrowed)
        assert bool(
            store.raw_rows(report.query.since, report.query.until, report.query.filters, report.query.by)
        ) == bool(key)
        assert report.total.requests == len(rows)
        assert len(report.groups) > reports.SERIES_GROUPS
        shown = report.groups[: reports.SERIES_GROUPS]
        assert all(g.series for g in shown) and not any(g.series for g in report.groups[reports.SERIES_GROUPS :])
        for group in shown:  # each shown series sums to its group's totals
            assert sum(t.cost_nanos for t in group.series) == group.totals.cost_nanos
        # Bucket by bucket, the shown series and the rest add up to every row of the bucket.
        for i, start in enumerate(report.buckets):
            in_bucket = [r for r in rows if start.timestamp() <= r.ts < start.timestamp() + 3600]
            drawn = sum(g.series[i].requests for g in shown) + report.rest[i].requests
            assert drawn == len(in_bucket)
        hidden = sum(g.totals.cost_nanos for g in report.groups[reports.SERIES_GROUPS :])
        assert sum(t.cost_nanos for t in report.rest) == hidden
    users = {line.group for line in store.rollup(START, now, Filters(), "user", only=["user-03", ""])}
    assert users == {"user-03", ""}


def test_a_report_from_raw_rows_is_refused_past_its_limit_and_says_how_to_narrow_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "buzz.sqlite3")
    store.create_key("k-one", "acme", "one", "hash")
    rows = [
        LedgerRow(f"r{i}", START + 600 * i, "anthropic", 200, "reported", 1.0, project=p, key_id=k, user_id=f"u{i % 5}")
        for i in range(300)
        for p, k in [("acme", "k-one") if i % 3 else ("globex", "k-two")]
    ]
    store.write_ledger(rows)
    now = START + 300 * 600
    params = {"range": "custom", "since": "2026-03-09", "until": "2026-03-11", "by": "user", "key": "k-one"}
    query = reports.parse_query(params, now, None)
    # A raw read walks every row of the range in the key's own project (a key never moves).
    in_range = [r for r in rows if query.since <= r.ts < query.until]
    walked = sum(1 for r in in_range if r.project == "acme")
    assert walked < len(in_range)
    assert store.raw_rows(query.since, query.until, query.filters, "user") == walked
    assert store.raw_rows(query.since, query.until, query.filters, "model") == 0  # the rollup holds it
    report = reports.usage_report(store, query, raw_limit=walked)  # at the limit: answered
    assert report.total.requests == sum(1 for r in in_range if r.key_id == "k-one")
    with pytest.raises(reports.TooManyRows) as refused:
        reports.usage_report(store, query, raw_limit=walked - 1)
    message = str(refused.value)
    assert f"{walked:,} over this range, more than the {walked - 1:,}" in message
    assert "a split by user narrowed to a key" in message and "Narrow the range to about" in message
    # What the rollups hold is never refused, whatever the limit.
    held = reports.parse_query({**params, "by": "model"}, now, None)
    assert reports.usage_report(store, held, raw_limit=0).total.requests == report.total.requests
    cache = reports.parse_query({**params, "user": "u1"}, now, None)
    with pytest.raises(reports.TooManyRows):
        reports.cache_report(store, cache, PriceBook(), raw_limit=1)
