"""The PostgreSQL store's rollups and report queries: the SQLite store's, in PostgreSQL's dialect.

The writer inserts a batch into the ledger and adds the rows it really inserted (a replayed row
inserts nothing, so it is never summed twice) to every rollup, in one transaction. Several
processes write at once, so every upsert visits its rows in primary-key order: two writers then
take their row locks in the same order and wait for each other instead of deadlocking.
Which table and spans answer a question is decided in `buzz.store.plan`, as for SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from buzz.billing.ledger import LedgerRow
from buzz.store.base import Bucketing, Dimension, Filters, RollupLine, Totals
from buzz.store.plan import SPANS, SUMS, cover, local, split_tag, table_for

EPOCH = "floor(extract(epoch FROM ts))::bigint"
_SPAN_VALUES = f"(VALUES {', '.join(f'({span})' for span in SPANS)}) AS s(span)"
_SUM_EXPRS = (
    "count(*)",
    "count(*) FILTER (WHERE status >= 400)",
    "sum(input_tokens)",
    "sum(output_tokens)",
    "sum(cache_write_5m_tokens)",
    "sum(cache_write_1h_tokens)",
    "sum(cache_read_tokens)",
    "coalesce(sum(cost_nanos), 0)",
    "coalesce(sum(list_cost_nanos), 0)",
    "count(*) FILTER (WHERE cost_nanos IS NULL AND usage_source <> 'none')",
    "count(*) FILTER (WHERE usage_source = 'estimated')",
)
_SELECT_SUMS = ", ".join(f"({expr})::bigint" for expr in _SUM_EXPRS)
_TAG_KEY = "CASE WHEN strpos(t.value, '=') > 0 THEN split_part(t.value, '=', 1) ELSE '' END"
_TAG_VALUE = "CASE WHEN strpos(t.value, '=') > 0 THEN substr(t.value, strpos(t.value, '=') + 1) ELSE t.value END"
_MAIN = (
    ("key_id", "coalesce(key_id, '')"),
    ("provider", "coalesce(provider, '')"),
    ("model", "coalesce(model, '')"),
    ("surface", "surface"),
    ("status_class", "status / 100"),
)
# The rows this batch inserted: the writer fills it from INSERT ... RETURNING.
NEW_ROWS = "ledger_new"


def _fold(table: str, dims: Sequence[tuple[str, str]], source: str = NEW_ROWS) -> str:
    names = ["project", "span", "bucket", *(name for name, _ in dims)]
    exprs = ["coalesce(project, '')", "s.span", f"{EPOCH} / s.span * s.span", *(expr for _, expr in dims)]
    positions = ", ".join(str(i + 1) for i in range(len(names)))
    updates = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in SUMS)
    return (
        f"INSERT INTO {table} ({', '.join(names)}, {', '.join(SUMS)}) "  # noqa: S608 - constants only
        f"SELECT {', '.join(exprs)}, {', '.join(_SUM_EXPRS)} FROM {source} CROSS JOIN {_SPAN_VALUES} "
        f"GROUP BY {positions} ORDER BY {positions} "
        f"ON CONFLICT ({', '.join(names)}) DO UPDATE SET {updates}"
    )


_TAGS_OF_NEW_ROWS = f"{NEW_ROWS} CROSS JOIN LATERAL unnest({NEW_ROWS}.tags) AS t(value)"
# Each request once per tag key it carries, though it may carry two values of one key.
_KEYS_OF_NEW_ROWS = (
    f"(SELECT DISTINCT n.id AS kid, {_TAG_KEY} AS tag_key FROM {NEW_ROWS} AS n, unnest(n.tags) AS t(value)) AS k "  # noqa: S608
    f"JOIN {NEW_ROWS} ON {NEW_ROWS}.id = k.kid"
)
FOLD = (
    _fold("rollup", _MAIN),
    _fold("rollup_project", ()),
    _fold("rollup_user", (("user_id", "coalesce(user_id, '')"),)),
    _fold("rollup_tag", (("tag_key", _TAG_KEY), ("tag_value", _TAG_VALUE)), _TAGS_OF_NEW_ROWS),
    _fold("rollup_tag_key", (("tag_key", "k.tag_key"),), _KEYS_OF_NEW_ROWS),
    "INSERT INTO key_last_used (key_id, project, ts) "  # noqa: S608 - constants
    f"SELECT key_id, min(coalesce(project, '')), max(ts) FROM {NEW_ROWS} WHERE key_id IS NOT NULL "
    "GROUP BY key_id ORDER BY key_id "
    "ON CONFLICT (key_id) DO UPDATE SET ts = greatest(key_last_used.ts, excluded.ts)",
)


# --- queries ---------------------------------------------------------------------------------

_GROUP_EXPRS: dict[str, str] = {
    "model": "model",
    "provider": "provider",
    "key": "key_id",
    "user": "user_id",
    "project": "project",
    "surface": "surface",
    "status": "status_class::text || 'xx'",
    "tag": "tag_value",
    "tag_key": "tag_key",
    "provider_model": "provider || chr(31) || model",
}
_WHOLE_TAG = "CASE WHEN tag_key = '' THEN tag_value ELSE tag_key || '=' || tag_value END"
_RAW_GROUP_EXPRS: dict[str, str] = {
    "model": "coalesce(model, '')",
    "provider": "coalesce(provider, '')",
    "key": "coalesce(key_id, '')",
    "user": "coalesce(user_id, '')",
    "project": "coalesce(project, '')",
    "surface": "surface",
    "status": "(status / 100)::text || 'xx'",
    "tag": _TAG_VALUE,
    "tag_key": "k.tag_key",
    "provider_model": "coalesce(provider, '') || chr(31) || coalesce(model, '')",
}
# The ranges of `cover`, as three arrays: each is one index range of (project, span, bucket).
_RANGES = "WITH r(span, lo, hi) AS (SELECT * FROM unnest(%s::int[], %s::bigint[], %s::bigint[]))"
_IN_RANGE = "t.span = r.span AND t.bucket >= r.lo AND t.bucket < r.hi"


def _ranges(since: int, until: int, bucketing: Bucketing | None) -> list[list[int]]:
    ranges = cover(since, until, bucketing)
    return [[span for span, _, _ in ranges], [lo for _, lo, _ in ranges], [hi for _, _, hi in ranges]]


def moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _line(row: Sequence[Any]) -> RollupLine:
    return RollupLine(int(row[0]), row[1], Totals(*row[2:]))


def rollup(
    conn: psycopg.Connection[Any],
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
            where.append(f"{column} = %s")
            args.append(value)
    if filters.tag is not None:
        where.append("tag_key = %s AND tag_value = %s")
        args += split_tag(filters.tag)
    if by == "tag" and tag_key is not None:
        where.append("tag_key = %s")
        args.append(tag_key)
    group = "''" if by is None else _WHOLE_TAG if by == "tag" and tag_key is None else _GROUP_EXPRS[by]
    if only is not None:
        where.append(f"{group} = ANY(%s)")
        args.append(list(only))
    sql = (
        f"{_RANGES} SELECT {local('bucket', bucketing)}, {group}, "  # noqa: S608 - constants
        f"{', '.join(f'sum(t.{name})::bigint' for name in SUMS)} FROM r JOIN {table} AS t ON {_IN_RANGE} "
        f"WHERE {' AND '.join(where)} GROUP BY 1, 2"
    )
    return [_line(row) for row in conn.execute(sql, [*_ranges(since, until, bucketing), *args])]


def _project_clause(table: str, project: str | None) -> tuple[list[str], list[Any]]:
    if project is not None:
        return ["t.project = %s"], [project]
    # Across projects, name each one the table holds, found by one index seek per project (a
    # skip scan): each is then a range of the primary key.
    names = (
        f"WITH RECURSIVE p(name) AS ((SELECT min(project) FROM {table}) UNION ALL "  # noqa: S608 - constants
        f"SELECT (SELECT min(project) FROM {table} WHERE project > p.name) FROM p WHERE p.name IS NOT NULL) "
        "SELECT name FROM p WHERE name IS NOT NULL"
    )
    return [f"t.project IN ({names})"], []


def walked_project(conn: psycopg.Connection[Any], filters: Filters) -> str | None:
    """The project whose rows a raw read walks: the one named, or the key's own, or None (all)."""
    if filters.project is not None or filters.key_id is None:
        return filters.project
    row = conn.execute("SELECT project FROM keys WHERE id = %s", (filters.key_id,)).fetchone()
    return row[0] if row is not None else None


def raw_rows(conn: psycopg.Connection[Any], since: int, until: int, filters: Filters) -> int:
    lines = rollup(conn, since, until, Filters(project=walked_project(conn, filters)), None, None, None)
    return sum(line.totals.requests for line in lines)


def _raw_rollup(
    conn: psycopg.Connection[Any],
    since: int,
    until: int,
    filters: Filters,
    by: Dimension | None,
    tag_key: str | None,
    bucketing: Bucketing | None,
    only: Sequence[str] | None,
) -> list[RollupLine]:
    """What no rollup holds, from raw rows on the (project, ts) or (ts, id) index."""
    where = ["ledger.ts >= %s AND ledger.ts < %s"]
    args: list[Any] = [moment(since), moment(until)]
    for column, value in (
        ("project", walked_project(conn, filters)),
        ("key_id", filters.key_id),
        ("model", filters.model),
        ("user_id", filters.user_id),
    ):
        if value is not None:
            where.append(f"ledger.{column} = %s")
            args.append(value)
    if filters.status_class is not None:
        where.append("ledger.status / 100 = %s")
        args.append(filters.status_class)
    if filters.tag is not None:
        where.append("%s = ANY(ledger.tags)")
        args.append(filters.tag)
    source = "ledger"
    if by == "tag_key":
        source = (
            f"(SELECT DISTINCT ledger.ts AS kts, ledger.id AS kid, {_TAG_KEY} AS tag_key "  # noqa: S608 - constants
            f"FROM ledger, unnest(ledger.tags) AS t(value) WHERE {' AND '.join(where)}) AS k "
            "JOIN ledger ON ledger.ts = k.kts AND ledger.id = k.kid"
        )
        where = ["true"]  # all applied in the subquery
    if by == "tag":
        source = "ledger, unnest(ledger.tags) AS t(value)"
        if tag_key is not None:
            where.append(f"{_TAG_KEY} = %s")
            args.append(tag_key)
    group = "''" if by is None else "t.value" if by == "tag" and tag_key is None else _RAW_GROUP_EXPRS[by]
    if only is not None:
        where.append(f"{group} = ANY(%s)")
        args.append(list(only))
    sql = (
        f"SELECT {local('floor(extract(epoch FROM ledger.ts))::bigint', bucketing)}, {group}, "  # noqa: S608
        f"{_SELECT_SUMS} FROM {source} WHERE {' AND '.join(where)} GROUP BY 1, 2"
    )
    return [_line(row) for row in conn.execute(sql, args)]


def tag_keys(conn: psycopg.Connection[Any], since: int, until: int, project: str | None) -> list[str]:
    where, args = _project_clause("rollup_tag_key", project)
    sql = (
        f"{_RANGES} SELECT t.tag_key FROM r JOIN rollup_tag_key AS t ON {_IN_RANGE} "  # noqa: S608 - constants
        f"WHERE {' AND '.join(where)} AND t.tag_key <> '' GROUP BY t.tag_key ORDER BY sum(t.requests) DESC, t.tag_key"
    )
    return [row[0] for row in conn.execute(sql, [*_ranges(since, until, None), *args])]


def last_used(conn: psycopg.Connection[Any], project: str | None) -> dict[str, float]:
    where, args = ("WHERE project = %s", (project,)) if project is not None else ("", ())
    sql = f"SELECT key_id, extract(epoch FROM ts)::float8 FROM key_last_used {where}"  # noqa: S608
    return {key_id: ts for key_id, ts in conn.execute(sql, args)}


# --- the export ------------------------------------------------------------------------------

BATCH = 2000
_ROW_COLUMNS = (
    # LedgerRow's field order; the time as unix milliseconds, exact (rows are stored to the ms).
    "id, (extract(epoch FROM ts) * 1000)::bigint, surface, status, usage_source, latency_ms, key_id, project, "
    "user_id, tags, provider, model, error_type, input_tokens, output_tokens, cache_write_5m_tokens, "
    "cache_write_1h_tokens, cache_read_tokens, cost_nanos, list_cost_nanos, price_version, ttfb_ms, "
    "upstream_request_id, usage_note, credential"
)


def export_rows(
    conn: psycopg.Connection[Any], since: int, until: int, project: str | None, after: tuple[float, str] | None
) -> Iterator[list[LedgerRow]]:
    """Oldest first by (ts, id), through a server-side cursor: constant memory at any size."""
    where = ["ts >= %s AND ts < %s"]
    args: list[Any] = [moment(since), moment(until)]
    if project is not None:
        where.append("project = %s")
        args.append(project)
    if after is not None:
        where.append("(ts, id) > (%s, %s)")
        args += [moment(after[0]), after[1]]
    sql = f"SELECT {_ROW_COLUMNS} FROM ledger WHERE {' AND '.join(where)} ORDER BY ts, id"  # noqa: S608
    with conn.transaction(), conn.cursor(name="buzz_export") as cursor:
        cursor.itersize = BATCH
        cursor.execute(sql, args)
        while batch := cursor.fetchmany(BATCH):
            rows = []
            for row in batch:
                fields = list(row)
                fields[1] /= 1000
                fields[9] = tuple(fields[9])
                rows.append(LedgerRow(*fields))
            yield rows
