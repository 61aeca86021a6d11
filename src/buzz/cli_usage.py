"""`buzz usage` as a table: one line per group (or per day), flags for unpriced and estimated
rows, and a total line."""

from __future__ import annotations

from rich.table import Table

from buzz.money import usd_fine
from buzz.reports import UsageReport
from buzz.store.base import Totals


def cost(nanos: int, unpriced: int) -> str:
    """Known cost; with unpriced rows in the group it is only a lower bound, and with nothing
    priced at all it is unknown, never $0."""
    if unpriced and not nanos:
        return usd_fine(None)
    return ("≥ " if unpriced else "") + usd_fine(nanos)


def _figures(t: Totals) -> list[str]:
    return [
        f"{t.requests:,}",
        f"{t.input_tokens:,}",
        f"{t.output_tokens:,}",
        f"{t.cache_write_5m_tokens + t.cache_write_1h_tokens:,}",
        f"{t.cache_read_tokens:,}",
        cost(t.cost_nanos, t.unpriced),
        cost(t.list_cost_nanos, t.unpriced),
    ]


def _label(group: str, t: Totals) -> str:
    notes = []
    if t.unpriced:
        notes.append(f"{t.unpriced} unpriced")
    if t.estimated:
        notes.append(f"{t.estimated} estimated")
    return (group or "—") + (f" ({', '.join(notes)})" if notes else "")


def table(report: UsageReport, by: str, title: str) -> Table:
    heading = "day" if by == "day" else by
    out = Table(heading, "requests", "input", "output", "cache write", "cache read", "cost", "list cost", title=title)
    if by == "day":
        series = report.groups[0].series if report.groups else []
        for start, totals in zip(report.buckets, series, strict=False):
            if totals.requests:
                out.add_row(_label(start.strftime("%Y-%m-%d"), totals), *_figures(totals))
    else:
        for line in report.groups:
            out.add_row(_label(line.group, line.totals), *_figures(line.totals))
        if report.untagged is not None:
            out.add_row(_label("(untagged)", report.untagged), *_figures(report.untagged))
    out.add_section()
    # With a split by tag, a request with two tags is in two lines: the total counts it once.
    out.add_row("total", *_figures(report.total), style="bold")
    return out
