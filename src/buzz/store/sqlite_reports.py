"""The SQLite store's rollups and report queries (the tables are described in 0008_rollups.sql).

The writer folds each batch of new ledger rows into the rollups with INSERT ... SELECT statements
that run inside SQLite, in the batch's own transaction: the sums are made in C, off the
interpreter, and a reader sees rows and sums change together. A query reads the coarsest span
whose buckets fit the question, and groups them into local hours or days in SQL, so it returns
one line per local bucket and group, whatever the span.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import msgspec

from buzz.billing.ledger import LedgerRow
from buzz.store.base import BUCKET_SECONDS, Bucketing, Dimension, Filters, RollupLine, Totals
from buzz.store.timetext import TextTimes, iso

SPANS = (86400, 3600, BUCKET_SECONDS)  # coarsest first
_SPAN_TABLE = f"(SELECT {SPANS[0]} AS span{''.join(f' UNION ALL SELECT {span}' for span in SPANS[1:])}) AS s"
_SUMS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "cost_nanos",
    "list_cost_nanos",
    "unpriced",
    "estimated",
)
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


def _fold(table: str, dims: tuple[str, ...], exprs: tuple[str, ...], source: str = "ledger", only: str = "1") -> str:
    names = ("project", "span", "bucket", *dims)
    values = ("coalesce(project, '')", "s.span", f"{_UNIX} / s.span * s.span", *exprs)
    groups = ", ".join(str(i + 1) for i in range(len(names)))
    updates = ", ".join(f"{name} = {name} + excluded.{name}" for name in _SUMS)
    return (
        f"INSERT INTO {table} ({', '.join(names + _SUMS)}) "  # noqa: S608 - constants only
        f"SELECT {', '.join(values + _SUM_EXPRS)} FROM {source}, {_SPAN_TABLE} WHERE {_NEW_ROWS} AND {only} "
        f"GROUP BY {groups} ON CONFLICT DO UPDATE SET {updates}"
    )


# Each request once per tag key it carries, though it may carry two values of one key.
_KEYS_OF_NEW_ROWS = (
    f"ledger JOIN (SELECT DISTINCT ledger.rowid AS rid, {_TAG_KEY} AS tag_key "  # noqa: S608 - constants
    f"FROM ledger, json_each(ledger.tags) AS t WHERE {_NEW_ROWS}) AS k ON k.rid = ledger.rowid"
)
_FOLD = _fold("rollup", _MAIN_DIMS, _MAIN_EXPRS)
_FOLD_USERS = _fold("rollup_user", ("user_id",), ("user_id",), only="user_id IS NOT NULL")
_FOLD_TAGS = (
    _fold("rollup_tag", ("tag_key", "tag_value"), (_TAG_KEY, _TAG_VALUE), "ledger, json_each(ledger.tags) AS t"),
    _fold("rollup_tag_key", ("tag_key",), ("k.tag_key",), _KEYS_OF_NEW_ROWS),
)
_LAST_USED = (
    "INSERT INTO key_last_used (key_id, project, ts) "  # noqa: S608 - constants
    "SELECT key_id, coalesce(project, ''), max(ts) FROM ledger "
    f"WHERE {_NEW_ROWS} AND key_id IS NOT NULL GROUP BY key_id "
    "ON CONFLICT DO UPDATE SET ts = max(ts, excluded.ts)"
)
_MARK = "UPDATE rollup_state SET last_rowid = coalesce((SELECT max(rowid) FROM ledger), last_rowid)"


def fold_new_rows(conn: sqlite3.Connection, users: bool = True, tags: bool = True) -> None:
    """Add the ledger rows not yet in the rollups to them; inside the caller's transaction.

    `users` and `tags` False say that no new row has one, and skip those tables' statements:
    each costs a fixed tens of microseconds even with nothing to add, which on a quiet gateway
    (a batch of one row) is most of a row's cost."""
    statements = [_FOLD, *([_FOLD_USERS] if users else []), *(_FOLD_TAGS if tags else []), _LAST_USED, _MARK]
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
_MAIN_GROUPS = frozenset({"model", "provider", "key", "project", "surface", "status", "provider_model"})


def _split_tag(tag: str) -> tuple[str, str]:
    name, sep, value = tag.partition("=")
    return (name, value) if sep else ("", tag)


def _table(filters: Filters, by: Dimension | None) -> str | None:
    """The rollup that holds this question, or None: it is read from raw rows."""
    others = filters.key_id is not None or filters.model is not None or filters.status_class is not None
    if filters.user_id is not None or by == "user":
        return "rollup_user" if not others and filters.tag is None and by in ("user", None) else None
    if filters.tag is not None or by in ("tag", "tag_key"):
        if others or (filters.tag is not None and by is not None):
            return None
        return "rollup_tag_key" if by == "tag_key" else "rollup_tag"
    return "rollup" if by is None or by in _MAIN_GROUPS else None


def _span(since: int, until: int, bucketing: Bucketing | None) -> int:
    """The coarsest span whose buckets each fall inside one of the question's buckets."""
    edges = [since, until]
    if bucketing is not None:
        edges += [bucketing.length, *(offset for _, offset in bucketing.offsets)]
        edges += [start for start, _ in bucketing.offsets[1:]]
    return next(span for span in SPANS if all(edge % span == 0 for edge in edges))


def _local(column: str, bucketing: Bucketing | None) -> str:
    """SQL for a row's local bucket key (see `Bucketing.key`); the figures are our own integers."""
    if bucketing is None:
        return "0"
    length = bucketing.length

    def key(offset: int) -> str:
        if length == 86400:
            return f"(({column} + {offset}) / 86400)"
        return f"(({column} + {offset}) / 3600 * 3600 - {offset})"

    (_, first), *changes = bucketing.offsets
    if not changes:
        return key(first)
    cases = []
    offset = first
    for start, following in changes:
        cases.append(f"WHEN {column} < {int(start)} THEN {key(int(offset))}")
        offset = following
    return f"CASE {' '.join(cases)} ELSE {key(int(offset))} END"


def rollup(
    conn: sqlite3.Connection,
    since: int,
    until: int,
    filters: Filters,
    by: Dimension | None,
    tag_key: str | None,
    bucketing: Bucketing | None,
) -> list[RollupLine]:
    table = _table(filters, by)
    if table is None:
        return _raw_rollup(conn, since, until, filters, by, tag_key, bucketing)
    where, args = _project_clause(table, filters.project)
    where.append("span = ? AND bucket >= ? AND bucket < ?")
    args += [_span(since, until, bucketing), since, until]
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
        args += _split_tag(filters.tag)
    if by == "tag" and tag_key is not None:
        where.append("tag_key = ?")
        args.append(tag_key)
    group = "''" if by is None else _WHOLE_TAG if by == "tag" and tag_key is None else _GROUP_EXPRS[by]
    sql = (
        f"SELECT {_local('bucket', bucketing)}, {group}, {', '.join(f'sum({name})' for name in _SUMS)} "  # noqa: S608
        f"FROM {table} WHERE {' AND '.join(where)} GROUP BY 1, 2"
    )
    lines = [RollupLine(row[0], row[1], Totals(*row[2:])) for row in conn.execute(sql, args)]
    if by == "user" and filters.user_id is None:
        lines += _without_user(conn, since, until, filters, bucketing, lines)
    return lines


def _without_user(
    conn: sqlite3.Connection,
    since: int,
    until: int,
    filters: Filters,
    bucketing: Bucketing | None,
    users: list[RollupLine],
) -> list[RollupLine]:
    """The "" group of a split by user: `rollup_user` holds rows with a user only (the rest would
    copy `rollup`), so rows without one are every row less the users' rows, bucket by bucket."""
    per_bucket: dict[int, Totals] = {}
    for line in users:
        per_bucket.setdefault(line.bucket, Totals()).add(line.totals)
    rest = []
    for line in rollup(conn, since, until, filters, None, None, bucketing):
        taken = per_bucket.get(line.bucket, Totals())
        left = Totals(*(getattr(line.totals, n) - getattr(taken, n) for n in Totals.__slots__))
        if left.requests:
            rest.append(RollupLine(line.bucket, "", left))
    return rest


def _project_clause(table: str, project: str | None) -> tuple[list[str], list[Any]]:
    if project is not None:
        return ["project = ?"], [project]
    # Across projects, name each one the table holds (found by one index seek per project): each
    # is then a range of the primary key, where a bare span and bucket range would read every
    # project's rows of every time.
    names = (
        f"WITH RECURSIVE p(name) AS (SELECT min(project) FROM {table} UNION ALL "  # noqa: S608 - constants
        f"SELECT (SELECT min(project) FROM {table} WHERE project > p.name) FROM p WHERE p.name IS NOT NULL) "
        "SELECT name FROM p WHERE name IS NOT NULL"
    )
    return [f"project IN ({names})"], []


def _raw_rollup(
    conn: sqlite3.Connection,
    since: int,
    until: int,
    filters: Filters,
    by: Dimension | None,
    tag_key: str | None,
    bucketing: Bucketing | None,
) -> list[RollupLine]:
    """What no rollup holds (a user or a tag with another filter, two tags), from raw rows on the
    (project, ts) or ts index: slower, and the one place a report reads the ledger itself."""
    where = ["ts >= ? AND ts < ?"]
    args: list[Any] = [iso(since), iso(until)]
    for column, value in (
        ("project", filters.project),
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
        source = (
            f"(SELECT DISTINCT ledger.rowid AS rid, {_TAG_KEY} AS tag_key "  # noqa: S608 - constants
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
    sql = (
        f"SELECT {_local(_UNIX, bucketing)}, {group}, {', '.join(_SUM_EXPRS)} "  # noqa: S608 - constants
        f"FROM {source} WHERE {' AND '.join(where)} GROUP BY 1, 2"
    )
    return [RollupLine(row[0], row[1], Totals(*row[2:])) for row in conn.execute(sql, args)]


def tag_keys(conn: sqlite3.Connection, since: int, until: int, project: str | None) -> list[str]:
    where, args = _project_clause("rollup_tag_key", project)
    sql = (
        "SELECT tag_key FROM rollup_tag_key "  # noqa: S608 - constants
        f"WHERE {' AND '.join(where)} AND span = ? AND bucket >= ? AND bucket < ? AND tag_key != '' "
        "GROUP BY tag_key ORDER BY sum(requests) DESC, tag_key"
    )
    return [row[0] for row in conn.execute(sql, [*args, _span(since, until, None), since, until])]


def last_used(conn: sqlite3.Connection, project: str | None) -> dict[str, float]:
    where, args = ("WHERE project = ?", (project,)) if project is not None else ("", ())
    rows = conn.execute(f"SELECT key_id, ts FROM key_last_used {where}", args)  # noqa: S608
    times = TextTimes()
    return {key_id: times(ts) for key_id, ts in rows}


# --- export and retention ----------------------------------------------------------------------

_EXPORT_COLUMNS = (
    "id, ts, surface, status, usage_source, latency_ms, key_id, project, user_id, tags, provider, model, "
    "error_type, input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, "
    "cost_nanos, list_cost_nanos, price_version, ttfb_ms, upstream_request_id, usage_note"
)  # LedgerRow's field order
EXPORT_BATCH = 5000


def export_rows(
    conn: sqlite3.Connection, since: int, until: int, project: str | None, after: tuple[float, str] | None
) -> Iterator[list[LedgerRow]]:
    where = ["ts >= ? AND ts < ?"]
    args: list[Any] = [iso(since), iso(until)]
    if project is not None:
        where.append("project = ?")
        args.append(project)
    if after is not None:
        # Rows are stored at millisecond precision; `after` is a row's own time, so it is exact.
        where.append("(ts, id) > (?, ?)")
        args += [iso(after[0]), after[1]]
    cursor = conn.execute(
        f"SELECT {_EXPORT_COLUMNS} FROM ledger WHERE {' AND '.join(where)} ORDER BY ts, id",  # noqa: S608
        args,
    )
    times = TextTimes()
    decode = msgspec.json.decode
    while batch := cursor.fetchmany(EXPORT_BATCH):
        rows = []
        for row in batch:
            fields = list(row)
            fields[1] = times(fields[1])
            fields[9] = tuple(decode(fields[9])) if fields[9] != "[]" else ()
            rows.append(LedgerRow(*fields))
        yield rows


PRUNE = (
    # Never the newest row: new rows take the highest rowid plus one, and the rollups' mark
    # counts on rowids that only grow.
    "DELETE FROM ledger WHERE rowid IN (SELECT rowid FROM ledger WHERE ts < ? "
    "AND rowid < (SELECT max(rowid) FROM ledger) ORDER BY ts LIMIT ?)"
)


def prune_args(before: float, limit: int) -> tuple[str, int]:
    return iso(before), limit
