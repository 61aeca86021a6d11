"""Ledger rows as export lines (CSV without its header, or JSON lines), made in Python: the
reference every store's `export_lines` matches, and how a store renders rows it cannot render in
its own SQL."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import msgspec

from buzz.billing.ledger import LedgerRow
from buzz.money import usd_exact
from buzz.store.timetext import iso


class Line(msgspec.Struct):
    """One row as a JSON line: every ledger field, in COLUMNS' order, tags as a list."""

    id: str
    ts: str
    project: str | None
    key_id: str | None
    user_id: str | None
    tags: tuple[str, ...]
    surface: str
    provider: str | None
    model: str | None
    status: int
    error_type: str | None
    usage_source: str
    usage_note: str | None
    input_tokens: int
    output_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    cost_nanos: int | None
    cost_usd: str | None
    list_cost_nanos: int | None
    list_cost_usd: str | None
    price_version: str | None
    latency_ms: float
    ttfb_ms: float | None
    upstream_request_id: str | None
    cursor: str


def line(row: LedgerRow, times: Callable[[int], str]) -> Line:
    millis = round(row.ts * 1000)
    cost, listed = row.cost_nanos, row.list_cost_nanos
    return Line(
        row.id,
        times(millis),
        row.project,
        row.key_id,
        row.user_id,
        row.tags,
        row.surface,
        row.provider,
        row.model,
        row.status,
        row.error_type,
        row.usage_source,
        row.usage_note,
        row.input_tokens,
        row.output_tokens,
        row.cache_write_5m_tokens,
        row.cache_write_1h_tokens,
        row.cache_read_tokens,
        cost,
        None if cost is None else usd_exact(cost),
        listed,
        None if listed is None else usd_exact(listed),
        row.price_version,
        row.latency_ms,
        row.ttfb_ms,
        row.upstream_request_id,
        f"{iso(millis / 1000)}~{row.id}",
    )


def _csv_text(value: str | None) -> str:
    """Text a client or the configuration chose, quoted as RFC 4180 says when it must be."""
    if value is None:
        return ""
    if '"' in value or "," in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_row(row: LedgerRow, times: Callable[[int], str]) -> str:
    # Written out field by field rather than by the csv module: an export formats a hundred
    # thousand rows a second, and most fields are numbers or identifiers that never need quotes.
    millis = round(row.ts * 1000)
    cost, listed, ttfb = row.cost_nanos, row.list_cost_nanos, row.ttfb_ms
    return (
        f"{row.id},{times(millis)},{_csv_text(row.project)},{row.key_id or ''},{_csv_text(row.user_id)},"
        f"{_csv_text(','.join(row.tags))},{row.surface},{row.provider or ''},{row.model or ''},{row.status},"
        f"{row.error_type or ''},{row.usage_source},{row.usage_note or ''},{row.input_tokens},"
        f"{row.output_tokens},{row.cache_write_5m_tokens},{row.cache_write_1h_tokens},{row.cache_read_tokens},"
        f"{'' if cost is None else cost},{'' if cost is None else usd_exact(cost)},"
        f"{'' if listed is None else listed},{'' if listed is None else usd_exact(listed)},"
        f"{row.price_version or ''},{row.latency_ms!r},{'' if ttfb is None else repr(ttfb)},"
        f"{row.upstream_request_id or ''},{iso(millis / 1000)}~{row.id}\r\n"
    )


def render(batches: Iterable[list[LedgerRow]], fmt: str, times: Callable[[int], str]) -> Iterable[bytes]:
    """One piece of bytes per batch: CSV lines (no header) when `fmt` is "csv", else JSON lines."""
    if fmt == "csv":
        for batch in batches:
            yield "".join([csv_row(row, times) for row in batch]).encode()
        return
    json = msgspec.json.Encoder()
    for batch in batches:
        out = bytearray()
        for row in batch:
            json.encode_into(line(row, times), out, len(out))
            out += b"\n"
        yield bytes(out)


class OffsetTimes:
    """Unix milliseconds as local RFC 3339 text under `offsets` (each a start in unix seconds, the
    offset in seconds from then on, and its label, "+05:30"; the first applies from before)."""

    __slots__ = ("_labels", "_offsets", "_prefix", "_second", "_starts")

    def __init__(self, offsets: Sequence[tuple[int, int, str]]) -> None:
        self._starts = [start for start, _, _ in offsets]
        self._offsets = [(seconds, label) for _, seconds, label in offsets]
        self._second = -1
        self._prefix = ""

    def __call__(self, millis: int) -> str:
        second, fraction = divmod(millis, 1000)
        if second != self._second:
            self._second = second
            index = max(0, bisect.bisect_right(self._starts, second) - 1)
            offset, label = self._offsets[index]
            head = datetime.fromtimestamp(second + offset, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._prefix = f"{head}.%03d{label}"
        return self._prefix % fraction
