"""How the report pages show the ledger's sums: table lines, summary figures, the chart's data.

Costs follow one rule. A sum leaves out the rows nobody could price (`Totals.unpriced` counts
them), so with any such row it is a lower bound, "≥ $1.20", and with nothing priced at all it is
unknown, "—": never $0. Every time shown carries its UTC offset, "2026-12-06 05:30 +05:30".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

from buzz.console.present import usd
from buzz.money import UNPRICED
from buzz.reports import Bucket, CacheLine, GroupLine, UsageReport
from buzz.store.base import Dimension, Totals

Metric = Literal["cost", "tokens", "requests"]
METRICS: dict[str, str] = {"cost": "Cost", "tokens": "Tokens", "requests": "Requests"}
# The chart draws this many groups, most cost first, and sums the rest as "other": more colours
# than this cannot be told apart. The table lists more, and sums the rest in one line.
CHART_GROUPS = 8
TABLE_GROUPS = 100
# What a group without a value of the dimension is called.
_NO_VALUE = {"key": "no key", "user": "no user", "project": "no project", "tag": "(empty value)"}
_IDS = ("key", "model", "user", "tag")  # shown as code: ids as sent


def offset(moment: datetime) -> str:
    text = moment.strftime("%z")  # +0530
    return f"{text[:3]}:{text[3:]}"


def local(moment: datetime) -> str:
    """2026-12-06 05:30 +05:30"""
    return f"{moment:%Y-%m-%d %H:%M} {offset(moment)}"


def local_at(ts: float, tz: tzinfo) -> str:
    return local(datetime.fromtimestamp(ts, tz))


def cost(nanos: int, unpriced: int) -> str:
    if not unpriced:
        return usd(nanos)
    return UNPRICED if nanos == 0 else f"≥ {usd(nanos)}"


def count(number: int) -> str:
    return f"{number:,}"


def share(part: int, whole: int) -> str:
    if not whole:
        return "—"
    if part and part * 1000 < whole:
        return "<0.1%"
    return f"{part / whole:.1%}"


def tokens(totals: Totals) -> int:
    t = totals
    return t.input_tokens + t.output_tokens + t.cache_write_5m_tokens + t.cache_write_1h_tokens + t.cache_read_tokens


def metric_value(totals: Totals, metric: Metric) -> int:
    if metric == "cost":
        return totals.cost_nanos
    return tokens(totals) if metric == "tokens" else totals.requests


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a report's table, formatted."""

    label: str
    detail: str  # a key's name, or how a line is made up ("3 groups")
    code: bool  # the label is an id as sent: shown as code
    kind: str  # "", "rest", "untagged" or "total": how the line is styled
    requests: str
    input: str
    output: str
    write_5m: str
    write_1h: str
    read: str
    cost: str
    list_cost: str
    savings: str
    errors: str
    unpriced: int
    estimated: int


def line(label: str, totals: Totals, detail: str = "", code: bool = False, kind: str = "") -> Line:
    t = totals
    priced_nothing = t.unpriced > 0 and t.cost_nanos == 0 and t.list_cost_nanos == 0
    return Line(
        label,
        detail,
        code,
        kind,
        count(t.requests),
        count(t.input_tokens),
        count(t.output_tokens),
        count(t.cache_write_5m_tokens),
        count(t.cache_write_1h_tokens),
        count(t.cache_read_tokens),
        cost(t.cost_nanos, t.unpriced),
        cost(t.list_cost_nanos, t.unpriced),
        UNPRICED if priced_nothing else usd(t.list_cost_nanos - t.cost_nanos),
        share(t.errors, t.requests),
        t.unpriced,
        t.estimated,
    )


def group_label(by: Dimension | None, group: str, key_names: Mapping[str, str]) -> tuple[str, str, bool]:
    """(label, detail, shown as code) for a group of a report split by `by`."""
    if by is None:
        return "All requests", "", False
    if group == "":
        return _NO_VALUE.get(by, "none"), "", False
    if by == "key":
        return group, key_names.get(group, ""), True
    return group, "", by in _IDS


@dataclass(frozen=True, slots=True)
class Table:
    lines: list[Line]
    total: Line
    untagged: Line | None


def table(report: UsageReport, key_names: Mapping[str, str]) -> Table:
    by = report.query.by
    lines = []
    for group in report.groups[:TABLE_GROUPS]:
        label, detail, code = group_label(by, group.group, key_names)
        lines.append(line(label, group.totals, detail, code))
    rest = report.groups[TABLE_GROUPS:]
    if rest:
        lines.append(line(f"{len(rest):,} more", _sum(g.totals for g in rest), "together", kind="rest"))
    untagged = None
    if report.untagged is not None:
        untagged = line("untagged", report.untagged, f"no {report.query.tag_key} tag", kind="untagged")
    return Table(lines, line("Total", report.total, kind="total"), untagged)


def _sum(parts: Iterable[Totals]) -> Totals:
    total = Totals()
    for part in parts:
        total.add(part)
    return total


@dataclass(frozen=True, slots=True)
class Figure:
    label: str
    value: str
    note: str = ""


def summary(total: Totals) -> list[Figure]:
    """The range at a glance, above the chart; the same sums as the table's total line."""
    t = total
    if t.unpriced:
        cost_note = f"{t.unpriced:,} unpriced: not in the sum"
    else:
        cost_note = f"{usd(t.list_cost_nanos - t.cost_nanos)} below list" if t.list_cost_nanos > t.cost_nanos else ""
    notes = [f"{share(t.errors, t.requests)} errors"] if t.requests else []
    if t.estimated:
        notes.append(f"{t.estimated:,} estimated")
    return [
        Figure("Cost", cost(t.cost_nanos, t.unpriced), cost_note),
        Figure("Requests", count(t.requests), " · ".join(notes)),
        Figure("Input tokens", count(t.input_tokens), "uncached"),
        Figure("Output tokens", count(t.output_tokens)),
        Figure("Cache reads", count(t.cache_read_tokens), f"{count(_writes(t))} written" if _writes(t) else ""),
    ]


def _writes(t: Totals) -> int:
    return t.cache_write_5m_tokens + t.cache_write_1h_tokens


def chart(report: UsageReport, metric: Metric, key_names: Mapping[str, str]) -> dict[str, object]:
    """The chart's data, for the page's JSON block: one series per group drawn, then "other"."""
    query = report.query
    drawn, rest = report.groups[:CHART_GROUPS], report.groups[CHART_GROUPS:]
    series: list[dict[str, object]] = []
    for group in drawn:
        label, detail, _ = group_label(query.by, group.group, key_names)
        series.append(
            {
                "label": f"{label} ({detail})" if detail else label,
                "values": _values(group, metric),
                "unpriced": [totals.unpriced for totals in group.series],
            }
        )
    if rest:
        buckets = range(len(report.buckets))
        series.append(
            {
                "label": f"other ({len(rest):,})",
                "values": [sum(metric_value(g.series[i], metric) for g in rest) for i in buckets],
                "unpriced": [sum(g.series[i].unpriced for g in rest) for i in buckets],
                "other": True,
            }
        )
    return {
        "metric": metric,
        "bucket": "Day" if query.bucket == "day" else "Hour",
        "axis": axis_title(report.buckets, query.bucket, query.tz),
        "labels": [local(bucket) for bucket in report.buckets],
        "ticks": [tick(bucket, query.bucket, i) for i, bucket in enumerate(report.buckets)],
        "series": series,
    }


def _values(group: GroupLine, metric: Metric) -> list[int]:
    return [metric_value(totals, metric) for totals in group.series]


def tick(moment: datetime, bucket: Bucket, index: int) -> str:
    """A bucket's label under the chart; the axis title names the zone and its offset."""
    day = f"{moment:%b} {moment.day}"
    if bucket == "day":
        return day
    hour = f"{moment:%H:%M}"
    return f"{hour}\n{day}" if index == 0 or moment.hour == 0 else hour


def axis_title(buckets: list[datetime], bucket: Bucket, tz: tzinfo) -> str:
    offsets = list(dict.fromkeys(offset(b) for b in buckets))
    return f"{'Days' if bucket == 'day' else 'Hours'} in {tz}, UTC{' / '.join(offsets)}"


@dataclass(frozen=True, slots=True)
class CacheRow:
    model: str
    provider: str
    input: str  # uncached input tokens
    write_5m: str
    write_1h: str
    write_cost: str
    read: str
    share: float  # of all input, served from the cache: for the meter
    share_text: str
    saved: str


@dataclass(frozen=True, slots=True)
class CacheTable:
    rows: list[CacheRow]
    total: Totals
    total_share: str
    total_writes: str
    total_saved: str
    unpriced_models: int  # models with cache traffic and no price: the dollar totals are lower bounds


def cache_table(lines: list[CacheLine]) -> CacheTable:
    """The Cache page's rows and totals. A model without a price shows "—" for its dollars, and
    makes the totals lower bounds."""
    rows = []
    total = Totals()
    writes = saved = unpriced = 0
    for item in lines:
        t = item.totals
        total.add(t)
        if item.write_nanos is not None and item.saved_nanos is not None:
            writes += item.write_nanos
            saved += item.saved_nanos
        elif t.cache_read_tokens or t.cache_write_5m_tokens or t.cache_write_1h_tokens:
            unpriced += 1
        rows.append(
            CacheRow(
                item.model or "no model",
                item.provider,
                count(t.input_tokens),
                count(t.cache_write_5m_tokens),
                count(t.cache_write_1h_tokens),
                usd(item.write_nanos),
                count(t.cache_read_tokens),
                item.read_share,
                share(t.cache_read_tokens, _all_input(t)),
                usd(item.saved_nanos),
            )
        )
    return CacheTable(
        rows,
        total,
        share(total.cache_read_tokens, _all_input(total)),
        cost(writes, unpriced),
        cost(saved, unpriced),
        unpriced,
    )


def _all_input(t: Totals) -> int:
    return t.input_tokens + t.cache_write_5m_tokens + t.cache_write_1h_tokens + t.cache_read_tokens
