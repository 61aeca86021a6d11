"""How a report is answered from the rollups, the same for every backend: which table holds a
question, which spans cover a range, and how a bucket's time becomes a local hour or day.

The SQL fragments here are integer arithmetic that SQLite and PostgreSQL read alike.
"""

from __future__ import annotations

import bisect

from buzz.store.base import BUCKET_SECONDS, Bucketing, Dimension, Filters

SPANS = (86400, 21600, 3600, BUCKET_SECONDS)  # coarsest first: a UTC day, six hours, an hour, a quarter
SUMS = (
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

MAIN_GROUPS = frozenset({"model", "provider", "key", "project", "surface", "status", "provider_model"})


def split_tag(tag: str) -> tuple[str, str]:
    name, sep, value = tag.partition("=")
    return (name, value) if sep else ("", tag)


# Each rollup with the dimensions it can split or filter by (the project is in all of them),
# smallest first: a question goes to the first that holds every dimension it names.
_TABLES: tuple[tuple[str, frozenset[str]], ...] = (
    ("rollup_project", frozenset()),
    ("rollup", MAIN_GROUPS),
    ("rollup_user", frozenset({"user"})),
    ("rollup_tag_key", frozenset({"tag_key"})),
    ("rollup_tag", frozenset({"tag"})),
)


def table_for(filters: Filters, by: Dimension | None) -> str | None:
    """The rollup that holds this question, or None: it is read from raw rows."""
    if filters.tag is not None and by in ("tag", "tag_key"):
        return None  # two tags of one request: the tag tables hold one per row
    named = {by or "project", "project"} | {
        dimension
        for dimension, value in (
            ("key", filters.key_id),
            ("model", filters.model),
            ("user", filters.user_id),
            ("status", filters.status_class),
            ("tag", filters.tag),
        )
        if value is not None
    }
    return next((table for table, dimensions in _TABLES if named <= dimensions | {"project"}), None)


def holds(filters: Filters, by: Dimension | None) -> bool:
    """Whether a rollup holds this question (else it is read from raw rows)."""
    return table_for(filters, by) is not None


def cover(since: int, until: int, bucketing: Bucketing | None) -> list[tuple[int, int, int]]:
    """The rollup rows to read for [since, until): (span, first bucket, end) ranges, each bucket
    at the coarsest span that lies inside the range and inside one local bucket under one
    offset. A month of UTC days is thirty daily rows per group; a day in Kolkata (UTC+05:30) is
    three six-hour rows, five hours and four quarter hours."""
    offsets = bucketing.offsets if bucketing is not None else ((since, 0),)
    starts = [start for start, _ in offsets]

    def offset(t: int) -> int:
        return offsets[max(0, bisect.bisect_right(starts, t) - 1)][1]

    def fits(t: int, span: int) -> bool:
        if t % span or t + span > until:
            return False
        if bucketing is None:
            return True
        last = t + span - 1
        if offset(t) != offset(last) or span > bucketing.length:
            return False
        return bucketing.key(_start(t, offset(t), bucketing.length), offset(t)) == bucketing.key(
            _start(last, offset(last), bucketing.length), offset(last)
        )

    ranges: list[tuple[int, int, int]] = []
    t = since
    while t < until:
        span = next(span for span in SPANS if fits(t, span))
        if ranges and ranges[-1][0] == span and ranges[-1][2] == t:
            ranges[-1] = (span, ranges[-1][1], t + span)
        else:
            ranges.append((span, t, t + span))
        t += span
    return ranges


def _start(t: int, offset: int, length: int) -> int:
    """The UTC start of the local bucket of `length` that `t` is in, under `offset`."""
    return (t + offset) // length * length - offset


def local(column: str, bucketing: Bucketing | None) -> str:
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
