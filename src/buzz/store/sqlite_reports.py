"""The SQLite store's rollups and report queries (the tables are described in 0008_rollups.sql).

The writer folds each batch of new ledger rows into the rollups with INSERT ... SELECT statements
that run inside SQLite, in the batch's own transaction: the sums are made in C, off the
interpreter, and a reader sees rows and sums change together. A query reads the coarsest span
whose buckets fit the question, and groups them into local hours or days in SQL, so it returns
one line per local bucket and group, whatever the span.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from buzz.store.base import BUCKET_SECONDS, Bucketing, Dimension, Filters, RollupLine, Totals
from buzz.store.plan import SPANS, SUMS, cover, local, split_tag, table_for
from buzz.store.timetext import TextTimes, iso

_SPAN_TABLE = f"(SELECT {SPANS[0]} AS span{''.join(f' UNION ALL SELECT {span}' for span in SPANS[1:])}) AS s"
_SUM_EXPRS = (
    "count(*)",
    "sum(status >= 400)",
    "sum(input_tokens)",
    "sum(output_tokens)",
    "sum(cache_write_5m_tokens)",
    "sum(cache_write_1h_tokens)",
    "sum(cache_read_tokens)",
    "coalesce(sum(cost_nanos), 0)",
    "coalesce(sum(list_cost_nanos), 0)",
    "sum(cost_nanos IS NULL AND usage_source != 'none')",
    "sum(usage_source = 'estimated')",
)
_UNIX = "CAST(strftime('%s', ts) AS INTEGER)"
_TAG_KEY = "CASE WHEN instr(t.value, '=') > 0 THEN substr(t.value, 1, instr(t.value, '=') - 1) ELSE '' END"
_TAG_VALUE = "CASE WHEN instr(t.value, '=') > 0 THEN substr(t.value, instr(t.value, '=') + 1) ELSE t.value END"
_NEW_ROWS = "ledger.rowid > (SELECT last_rowid FROM rollup_state)"
_MAIN_DIMS = ("key_id", "provider", "model", "surface", "status_class")
_MAIN_EXPRS = ("coalesce(key_id, '')", "coalesce(provider, '')", "coalesce(model, '')", "surface", "status / 100")


def _fold(table: str, dims: tuple[str, ...], exprs: tuple[str, ...], source: str = "ledger") -> tuple[str, ...]:
    """Statements that add the new rows to `table`: sum them per quarter hour into a temporary
    table (each row read and sorted once), then add those sums at every span (a handful of
    groups, however many rows)."""
    stage = f"temp.fold_{table}"
    names = ("project", "bucket", *dims)
    groups = ", ".join(str(i + 1) for i in range(len(names)))
    spans = ("project", "s.span", "bucket / s.span * s.span", *dims)
    updates = ", ".join(f"{name} = {name} + excluded.{name}" for name in SUMS)
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS fold_{table} ({', '.join(names + SUMS)})",
        f"INSERT INTO {stage} SELECT coalesce(project, ''), {_UNIX} / {BUCKET_SECONDS} * {BUCKET_SECONDS}, "  # noqa: S608
        f"{', '.join(exprs + _SUM_EXPRS)} FROM {source} WHERE {_NEW_ROWS} GROUP BY {groups}",
        f"INSERT INTO {table} (project, span, {', '.join(names[1:] + SUMS)}) "  # noqa: S608 - constants only
        f"SELECT {', '.join(spans)}, {', '.join(f'sum({name})' for name in SUMS)} FROM {stage}, {_SPAN_TABLE} "
        f"WHERE 1 GROUP BY {', '.join(str(i + 1) for i in range(len(spans)))} ON CONFLICT DO UPDATE SET {updates}",
        f"DELETE FROM {stage}",  # noqa: S608 - constants only
    )


# Each request once per tag key it carries, though it may carry two values of one key.
_KEYS_OF_NEW_ROWS = (
    f"ledger JOIN (SELECT DISTINCT ledger.rowid AS rid, {_TAG_KEY} AS tag_key "  # noqa: S608 - constants
    f"FROM ledger, json_each(ledger.tags) AS t WHERE {_NEW_ROWS}) AS k ON k.rid = ledger.rowid"
)
_FOLD_MAIN = _fold("rollup", _MAIN_DIMS, _MAIN_EXPRS)
# rollup_project from the same quarter-hour sums, before they are cleared: no second pass over the rows.
_FOLD_PROJECT = (
    f"INSERT INTO rollup_project (project, span, bucket, {', '.join(SUMS)}) "  # noqa: S608 - constants only
    f"SELECT project, s.span, bucket / s.span * s.span, {', '.join(f'sum({name})' for name in SUMS)} "
    f"FROM temp.fold_rollup, {_SPAN_TABLE} WHERE 1 GROUP BY 1, 2, 3 "
    f"ON CONFLICT DO UPDATE SET {', '.join(f'{name} = {name} + excluded.{name}' for name in SUMS)}"
)
_FOLD = (*_FOLD_MAIN[:-1], _FOLD_PROJECT, _FOLD_MAIN[-1])
_TAGS_OF_NEW_ROWS = "ledger, json_each(ledger.tags) AS t"
_FOLD_USERS = _fold("rollup_user", ("user_id",), ("coalesce(user_id, '')",))
_FOLD_TAGS = (
    *_fold("rollup_tag", ("tag_key", "tag_value"), (_TAG_KEY, _TAG_VALUE), _TAGS_OF_NEW_ROWS),
    *_fold("rollup_tag_key", ("tag_key",), ("k.tag_key",), _KEYS_OF_NEW_ROWS),
)
_LAST_USED = (
    "INSERT INTO key_last_used (key_id, project, ts) "  # noqa: S608 - constants
    "SELECT key_id, coalesce(project, ''), max(ts) FROM ledger "
    f"WHERE {_NEW_ROWS} AND key_id IS NOT NULL GROUP BY key_id "
    "ON CONFLICT DO UPDATE SET ts = max(ts, excluded.ts)"
)
# True when the ledger holds rows the rollups do not have yet.
BEHIND = "SELECT coalesce((SELECT max(rowid) FROM ledger), 0) > last_rowid FROM rollup_state"
_MARK = "UPDATE rollup_state SET last_rowid = coalesce((SELECT max(rowid) FROM ledger), last_rowid)"


def fold_new_rows(conn: sqlite3.Connection, tags: bool = True) -> None:
    """Add the ledger rows not yet in the rollups to them; inside the caller's transaction.

    `tags` False says that no new row has one, and skips those tables' statements: each costs a
    fixed tens of microseconds even with nothing to add."""
    statements = [*_FOLD, *_FOLD_USERS, *(_FOLD_TAGS if tags else ()), _LAST_USED, _MARK]
    for statement in statements:
        conn.execute(statement)


# --- queries ---------------------------------------------------------------------------------

_GROUP_EXPRS: dict[str, str] = {
    "model": "model",
    "provider": "provider",
    "key": "key_id",
    "user": "user_id",
    "project": "project",
    "surface": "surface",
    "status": "status_class || 'xx'",
    "tag": "tag_value",
    "tag_key": "tag_key",
    "provider_model": "provider || char(31) || model",
}
_WHOLE_TAG = "CASE WHEN tag_key = '' THEN tag_value ELSE tag_key || '=' || tag_value END"
# The same over raw ledger rows, for what the rollups do not hold.
_RAW_GROUP_EXPRS: dict[str, str] = {
    "model": "coalesce(model, '')",
    "provider": "coalesce(provider, '')",
    "key": "coalesce(key_id, '')",
    "user": "coalesce(user_id, '')",
    "project": "coalesce(project, '')",
    "surface": "surface",
    "status": "(status / 100) || 'xx'",
    "tag": _TAG_VALUE,
    "tag_key": "k.tag_key",
    "provider_model": "coalesce(provider, '') || char(31) || coalesce(model, '')",
}


def raw_rows(conn: sqlite3.Connection, since: int, until: int, filters: Filters) -> int:
    """How many ledger rows a raw read of [since, until) with these filters walks: every row of
    the range in the project it reads on the (project, ts) index, or in all of them on ts."""
    project = _walked_project(conn, filters)
    lines = rollup(conn, since, until, Filters(project=project), None, None, None)
    return sum(line.totals.requests for line in lines)


def _walked_project(conn: sqlite3.Connection, filters: Filters) -> str | None:
    """The project whose rows a raw read walks: the one named, or the key's own (a key never
    changes project, so its rows are all in it), or None for every project."""
    if filters.project is not None or filters.key_id is None:
        return filters.project
    row = conn.execute("SELECT project FROM keys WHERE id = ?", (filters.key_id,)).fetchone()
    return row[0] if row is not None else None


def rollup(
    conn: sqlite3.Connection,
    since: int,
    until: int,
    filters: Filters,
    by: Dimension | None,
    tag_key: str | None,
    bucketing: Bucketing | None,
    only: Sequence[str] | None = None,
) -> list[RollupLine]:
    table = table_for(filters, by)
    if table is None:
        return _raw_rollup(conn, since, until, filters, by, tag_key, bucketing, only)
    where, args = _project_clause(table, filters.project)
    for column, value in (
        ("key_id", filters.key_id),
        ("model", filters.model),
        ("user_id", filters.user_id),
        ("status_class", filters.status_class),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if filters.tag is not None:
        where.append("tag_key = ? AND tag_value = ?")
        args += split_tag(filters.tag)
    if by == "tag" and tag_key is not None:
        where.append("tag_key = ?")
        args.append(tag_key)
    group = "''" if by is None else _WHOLE_TAG if by == "tag" and tag_key is None else _GROUP_EXPRS[by]
    if only is not None:
        where.append(f"{group} IN ({', '.join('?' * len(only))})")
        args += only
    sql = (
        f"{_RANGES} SELECT {local('bucket', bucketing)}, {group}, "  # noqa: S608 - constants
        f"{', '.join(f'sum(t.{name})' for name in SUMS)} FROM r JOIN {table} AS t ON {_IN_RANGE} "
        f"WHERE {' AND '.join(where)} GROUP BY 1, 2"
    )
    ranges = msgspec.json.encode(cover(since, until, bucketing)).decode()
    return [RollupLine(row[0], row[1], Totals(*row[2:])) for row in conn.execute(sql, [ranges, *args])]


# The ranges of `_cover`, as a JSON array bound to the first parameter: each is one index range
# of (project, span, bucket), read in order.
_RANGES = (
    "WITH r(span, lo, hi) AS (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]') FROM json_each(?))"
)
_IN_RANGE = "t.span = r.span AND t.bucket >= r.lo AND t.bucket < r.hi"


def _project_clause(table: str, project: str | None) -> tuple[list[str], list[Any]]:
    if project is not None:
        return ["t.project = ?"], [project]
    # Across projects, name each one the table holds (found by one index seek per project): each
    # is then a range of the primary key, where a bare span and bucket range would read every
    # project's rows of every time.
    names = (
        f"WITH RECURSIVE p(name) AS (SELECT min(project) FROM {table} UNION ALL "  # noqa: S608 - constants
        f"SELECT (SELECT min(project) FROM {table} WHERE project > p.name) FROM p WHERE p.name IS NOT NULL) "
        "SELECT name FROM p WHERE name IS NOT NULL"
    )
    return [f"t.project IN ({names})"], []


def _raw_rollup(
    conn: sqlite3.Connection,
    since: int,
    until: int,
    filters: Filters,
    by: Dimension | None,
    tag_key: str | None,
    bucketing: Bucketing | None,
    only: Sequence[str] | None,
) -> list[RollupLine]:
    """What no rollup holds (a user or a tag with another filter, two tags), from raw rows on the
    (project, ts) or ts index: slower, and the one place a report reads the ledger itself."""
    where = ["ts >= ? AND ts < ?"]
    args: list[Any] = [iso(since), iso(until)]
    for column, value in (
        ("project", _walked_project(conn, filters)),
        ("key_id", filters.key_id),
        ("model", filters.model),
        ("user_id", filters.user_id),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if filters.status_class is not None:
        where.append("status / 100 = ?")
        args.append(filters.status_class)
    if filters.tag is not None:
        where.append("EXISTS (SELECT 1 FROM json_each(ledger.tags) AS f WHERE f.value = ?)")
        args.append(filters.tag)
    source = "ledger"
    if by == "tag_key":
        # The filters go inside, and each row is then fetched by rowid: with the filters outside,
        # SQLite materialized every row of the range and scanned that list once per matching row.
        # `+ledger.rowid`: DISTINCT on the bare rowid made SQLite read the whole table in rowid
        # order rather than the range on an index (1.2 s against 37 ms for a key's day of 10M rows).
        source = (
            f"(SELECT DISTINCT +ledger.rowid AS rid, {_TAG_KEY} AS tag_key "  # noqa: S608 - constants
            f"FROM ledger, json_each(ledger.tags) AS t WHERE {' AND '.join(where)}) AS k "
            "CROSS JOIN ledger ON ledger.rowid = k.rid"
        )
        where = ["1"]  # all applied in the subquery
    if by == "tag":
        source = "ledger, json_each(ledger.tags) AS t"
        if tag_key is not None:
            where.append(f"{_TAG_KEY} = ?")
            args.append(tag_key)
    group = "''" if by is None else "t.value" if by == "tag" and tag_key is None else _RAW_GROUP_EXPRS[by]
    if only is not None:
        where.append(f"{group} IN ({', '.join('?' * len(only))})")
        args += only
    sql = (
        f"SELECT {local(_UNIX, bucketing)}, {group}, {', '.join(_SUM_EXPRS)} "  # noqa: S608 - constants
        f"FROM {source} WHERE {' AND '.join(where)} GROUP BY 1, 2"
    )
    return [RollupLine(row[0], row[1], Totals(*row[2:])) for row in conn.execute(sql, args)]


def tag_keys(conn: sqlite3.Connection, since: int, until: int, project: str | None) -> list[str]:
    where, args = _project_clause("rollup_tag_key", project)
    sql = (
        f"{_RANGES} SELECT t.tag_key FROM r JOIN rollup_tag_key AS t ON {_IN_RANGE} "  # noqa: S608 - constants
        f"WHERE {' AND '.join(where)} AND t.tag_key != '' GROUP BY t.tag_key ORDER BY sum(t.requests) DESC, t.tag_key"
    )
    ranges = msgspec.json.encode(cover(since, until, None)).decode()
    return [row[0] for row in conn.execute(sql, [ranges, *args])]


def last_used(conn: sqlite3.Connection, project: str | None) -> dict[str, float]:
    where, args = ("WHERE project = ?", (project,)) if project is not None else ("", ())
    rows = conn.execute(f"SELECT key_id, ts FROM key_last_used {where}", args)  # noqa: S608
    times = TextTimes()
    return {key_id: times(ts) for key_id, ts in rows}


# --- retention ----------------------------------------------------------------------

PRUNE = (
    # Never the newest row: new rows take the highest rowid plus one, and the rollups' mark
    # counts on rowids that only grow.
    "DELETE FROM ledger WHERE rowid IN (SELECT rowid FROM ledger WHERE ts < ? "
    "AND rowid < (SELECT max(rowid) FROM ledger) ORDER BY ts LIMIT ?)"
)


def prune_args(before: float, limit: int) -> tuple[str, int]:
    return iso(before), limit
