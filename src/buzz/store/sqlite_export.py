"""The SQLite store's export: ledger rows in time order, rendered as CSV or JSON lines by SQLite
itself (`export_lines`), or read back as rows (`export_rows`), over one range query.

Reading 24 columns into Python objects and formatting them there ran at about 60,000 rows a
second; SQLite builds each line in C, and Python only joins a batch of strings, at well over
100,000. `buzz.export.encode` is the same rendering in Python: the tests hold the two to the
same bytes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from buzz.billing.ledger import LedgerRow
from buzz.store.timetext import iso

BATCH = 5000


def _local_time(offsets: Sequence[tuple[int, int, str]]) -> str:
    """RFC 3339 in local time: the stored UTC text shifted by the offset in force, with its label.
    `offsets` are (from unix seconds, offset seconds, "+05:30"); figures and labels are our own."""

    def shifted(offset: int, label: str) -> str:
        if offset == 0:  # the stored text is already the time: only the "Z" changes
            return f"substr(ts, 1, 23) || '{label}'"
        return f"strftime('%Y-%m-%dT%H:%M:%S', ts, '{int(offset):+d} seconds') || '.' || substr(ts, 21, 3) || '{label}'"

    (_, first, first_label), *changes = offsets
    if not changes:
        return shifted(first, first_label)
    cases, offset, label = [], first, first_label
    for start, following, following_label in changes:
        cases.append(f"WHEN ts < '{iso(start)}' THEN {shifted(offset, label)}")
        offset, label = following, following_label
    return f"CASE {' '.join(cases)} ELSE {shifted(offset, label)} END"


def _usd(column: str) -> str:
    """Nano-dollars as exact USD text: cents always, more digits only when they are not zero."""
    nanos = f"printf('%09d', {column} % 1000000000)"
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE ({column} / 1000000000) || '.' || "
        f"substr({nanos}, 1, 2) || rtrim(substr({nanos}, 3), '0') END"
    )


# RFC 4180 quotes a field that holds a quote, a comma or a line break. The pattern's class holds
# the four characters themselves, so one GLOB decides.
_NEEDS_QUOTES = "'*[\",\n\r]*'"


def _csv(expression: str) -> str:
    """Text a client or the configuration chose, quoted as RFC 4180 says when it must be."""
    return (
        f"CASE WHEN {expression} IS NULL THEN '' WHEN {expression} GLOB {_NEEDS_QUOTES} "
        f"THEN '\"' || replace({expression}, '\"', '\"\"') || '\"' ELSE {expression} END"
    )


# A request's tags, comma-joined. One tag with no escape in its JSON (the common case) is cut out
# of the JSON text as it is, ["feature=search"], and needs no quotes: a tag holds no comma or
# line break, and a quote in it is escaped, so takes the other way.
_TAGS = (
    "CASE WHEN tags = '[]' THEN '' "  # noqa: S608 - constants only
    "WHEN instr(tags, '\",\"') = 0 AND instr(tags, '\\') = 0 THEN substr(tags, 3, length(tags) - 4) "
    f"ELSE {_csv('(SELECT group_concat(value, char(44)) FROM json_each(ledger.tags))')} END"
)
_CURSOR = "ts || '~' || id"  # the row's place: its stored time and its id


def _csv_line(local_time: str) -> str:
    # Only client text is checked for quoting (project names are free of it by their rule too,
    # but were not always): models, error types, request ids and price versions are identifiers
    # by the ledger's own rules, and never hold a comma, a quote or a line break.
    fields = [
        "id",
        local_time,
        _csv("project"),
        "key_id",
        _csv("user_id"),
        _TAGS,
        "surface",
        "provider",
        "model",
        "status",
        "error_type",
        "usage_source",
        "usage_note",
        "input_tokens",
        "output_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "cache_read_tokens",
        "cost_nanos",
        _usd("cost_nanos"),
        "list_cost_nanos",
        _usd("list_cost_nanos"),
        "price_version",
        "latency_ms",
        "ttfb_ms",
        "upstream_request_id",
        _CURSOR,
    ]
    # One printf builds the line in one pass (a chain of `||` copies it once per field), and
    # prints NULL as the empty field CSV wants.
    template = ",".join(["%s"] * len(fields)) + "\r\n"
    return f"printf('{template}', {', '.join(fields)})"


def _json_line(local_time: str) -> str:
    pairs = [
        ("id", "id"),
        ("ts", local_time),
        ("project", "project"),
        ("key_id", "key_id"),
        ("user_id", "user_id"),
        ("tags", "json(tags)"),
        ("surface", "surface"),
        ("provider", "provider"),
        ("model", "model"),
        ("status", "status"),
        ("error_type", "error_type"),
        ("usage_source", "usage_source"),
        ("usage_note", "usage_note"),
        ("input_tokens", "input_tokens"),
        ("output_tokens", "output_tokens"),
        ("cache_write_5m_tokens", "cache_write_5m_tokens"),
        ("cache_write_1h_tokens", "cache_write_1h_tokens"),
        ("cache_read_tokens", "cache_read_tokens"),
        ("cost_nanos", "cost_nanos"),
        ("cost_usd", _usd("cost_nanos")),
        ("list_cost_nanos", "list_cost_nanos"),
        ("list_cost_usd", _usd("list_cost_nanos")),
        ("price_version", "price_version"),
        ("latency_ms", "latency_ms"),
        ("ttfb_ms", "ttfb_ms"),
        ("upstream_request_id", "upstream_request_id"),
        ("cursor", _CURSOR),
    ]
    members = ", ".join("'" + name + "', " + value for name, value in pairs)
    return f"json_object({members}) || char(10)"


def _in_order(
    conn: sqlite3.Connection,
    columns: str,
    since: int,
    until: int,
    project: str | None,
    after: tuple[float, str] | None,
) -> sqlite3.Cursor:
    """`columns` of the ledger rows in [since, until), oldest first (by time, then id), after the
    row (ts, id) when resuming."""
    where = ["ts >= ? AND ts < ?"]
    args: list[Any] = [iso(since), iso(until)]
    if project is not None:
        where.append("project = ?")
        args.append(project)
    if after is not None:
        # Rows are stored at millisecond precision; `after` is a row's own time, so it is exact.
        where.append("(ts, id) > (?, ?)")
        args += [iso(after[0]), after[1]]
    return conn.execute(
        f"SELECT {columns} FROM ledger WHERE {' AND '.join(where)} ORDER BY ts, id",  # noqa: S608 - our own SQL
        args,
    )


def export_lines(
    conn: sqlite3.Connection,
    since: int,
    until: int,
    project: str | None,
    after: tuple[float, str] | None,
    fmt: str,
    offsets: Sequence[tuple[int, int, str]],
) -> Iterator[bytes]:
    local_time = _local_time(offsets)
    line = _csv_line(local_time) if fmt == "csv" else _json_line(local_time)
    cursor = _in_order(conn, line, since, until, project, after)
    while batch := cursor.fetchmany(BATCH):
        yield "".join([row[0] for row in batch]).encode()


_ROW_COLUMNS = (
    # The time as unix milliseconds, worked out by SQLite: parsing the text here cost a third of
    # the read's time.
    "id, CAST(strftime('%s', ts) AS INTEGER) * 1000 + CAST(substr(ts, 21, 3) AS INTEGER), surface, status, "
    "usage_source, latency_ms, key_id, project, user_id, tags, provider, model, error_type, input_tokens, "
    "output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_nanos, list_cost_nanos, "
    "price_version, ttfb_ms, upstream_request_id, usage_note, credential"
)  # LedgerRow's field order


def export_rows(
    conn: sqlite3.Connection, since: int, until: int, project: str | None, after: tuple[float, str] | None
) -> Iterator[list[LedgerRow]]:
    cursor = _in_order(conn, _ROW_COLUMNS, since, until, project, after)
    decode = msgspec.json.decode
    while batch := cursor.fetchmany(BATCH):
        rows = []
        for row in batch:
            fields = list(row)
            fields[1] /= 1000
            fields[9] = tuple(decode(fields[9])) if fields[9] != "[]" else ()
            rows.append(LedgerRow(*fields))
        yield rows
