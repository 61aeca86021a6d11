"""The report pages: Usage (spend over time, split by one dimension), Features (spend per value
of one tag key) and Cache (what prompt caching cost and saved, per model).

Their parameters live in the URL, exactly those `buzz.reports.parse_query` reads, so a view can
be shared as a link. A member's project comes from the session, never from the URL, and a key
named in the URL must be one of the member's own (any other is a 404, as everywhere in the
console). Figures come from the store's rollups, read in a worker thread: on a big ledger a
report takes a moment, and the event loop keeps serving the gateway meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import cast
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from buzz.console import figures
from buzz.console.context import PREFIX, Context, NotFound
from buzz.console.figures import Metric
from buzz.console.sessions import Session
from buzz.export import ExportQuery, parse_export, stream
from buzz.reports import (
    InvalidQuery,
    Query,
    UsageReport,
    cache_report,
    local_text,
    parse_query,
    usage_report,
)
from buzz.store.base import Store

USAGE = f"{PREFIX}/usage"
FEATURES = f"{PREFIX}/features"
CACHE = f"{PREFIX}/cache"
EXPORT = f"{PREFIX}/export"
# Offered in the time zone picker, with whatever zone the URL names.
ZONES = (
    "UTC",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "Africa/Johannesburg",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
# A key picker lists at most this many; any other id can still be typed.
KEY_CHOICES = 500


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    label: str


RANGES = (
    Choice("24h", "Last 24 hours"),
    Choice("7d", "Last 7 days"),
    Choice("30d", "Last 30 days"),
    Choice("custom", "Custom"),
)
BUCKETS = (Choice("hour", "Hours"), Choice("day", "Days"))
STATUSES = (Choice("", "any"), Choice("2xx", "2xx"), Choice("4xx", "4xx"), Choice("5xx", "5xx"))
METRICS = tuple(Choice(value, label) for value, label in figures.METRICS.items())
_DIMENSIONS = (
    ("model", "Model"),
    ("provider", "Provider"),
    ("key", "Key"),
    ("user", "User"),
    ("project", "Project"),
    ("surface", "API"),
    ("status", "Status"),
)


@dataclass(frozen=True, slots=True)
class QueryForm:
    """The GET form at the top of a report page, filled with the view's parameters."""

    action: str
    values: Mapping[str, str]
    zones: list[Choice]
    dimensions: list[Choice]  # empty: the page takes no `by`
    dimension_label: str
    projects: list[str]  # the operator's project filter; empty for a member
    keys: list[Choice]
    buckets: bool  # the page takes `bucket` and `metric`
    ranges: tuple[Choice, ...] = RANGES
    bucket_choices: tuple[Choice, ...] = BUCKETS
    statuses: tuple[Choice, ...] = STATUSES
    metrics: tuple[Choice, ...] = METRICS


def routes(ctx: Context) -> list[Route]:
    async def read(request: Request, session: Session) -> tuple[Query, Metric]:
        params = request.query_params
        query = parse_query(params, ctx.wall_clock(), session.project)
        metric = params.get("metric") or "cost"
        if metric not in figures.METRICS:
            raise InvalidQuery("metric: use cost, tokens or requests")
        if session.project is not None:
            if query.by == "project":
                raise InvalidQuery("by: you see one project; split it by model, key, user, API, status or a tag")
            if query.filters.key_id is not None:
                key = await ctx.store.find_key(query.filters.key_id)
                if key is None or key.project != session.project:
                    raise NotFound
        return query, cast(Metric, metric)

    def key_names(session: Session, project: str | None) -> dict[str, str]:
        """Id -> name of the keys the session may pick from (a member: its project's)."""
        return {key.id: key.name or "" for key in ctx.store.list_keys(session.project or project)}

    def form(
        request: Request,
        action: str,
        session: Session,
        values: Mapping[str, str],
        dimensions: list[Choice],
        dimension_label: str = "Split by",
        buckets: bool = True,
        names: Mapping[str, str] | None = None,
    ) -> QueryForm:
        # The bucket as asked, not as worked out: "automatic" stays so when the range changes.
        values = {**values, "bucket": request.query_params.get("bucket", "")}
        if names is None:
            names = key_names(session, values.get("project") or None)
        tz = values.get("tz") or "UTC"
        zones = [*ZONES, tz] if tz not in ZONES else list(ZONES)
        now = ctx.wall_clock()
        return QueryForm(
            action,
            values,
            [Choice(zone, _zone_label(zone, now)) for zone in zones],
            dimensions,
            dimension_label,
            [] if session.project is not None else ctx.project_names(session),
            [Choice(key, name) for key, name in list(names.items())[:KEY_CHOICES]],
            buckets,
        )

    def invalid(request: Request, session: Session, template: str, section: str, error: InvalidQuery) -> Response:
        values = {name: value for name, value in request.query_params.items()}
        dimensions = _dimensions(session, []) if section == "usage" else []
        label = "Tag key" if section == "features" else "Split by"
        page_form = form(request, request.url.path, session, values, dimensions, label, section != "cache")
        return ctx.page(request, template, session, 400, section=section, form=page_form, error=str(error))

    async def usage(request: Request) -> Response:
        session = ctx.session(request)
        try:
            query, metric = await read(request, session)
            report, tag_keys = await asyncio.to_thread(_usage, ctx.store, query, ctx.settings.raw_rows_limit)
        except InvalidQuery as error:
            return invalid(request, session, "usage.html", "usage", error)
        names = key_names(session, query.filters.project)
        values = _values(query, metric)
        export = {kind: f"{EXPORT}?{urlencode(_export_params(query, kind))}" for kind in ("csv", "jsonl")}
        dimensions = _dimensions(session, tag_keys, query.tag_key)
        return ctx.page(
            request,
            "usage.html",
            session,
            section="usage",
            form=form(request, USAGE, session, values, dimensions, names=names),
            error="",
            report=_report_view(report, metric, names),
            export=export,
        )

    async def features(request: Request) -> Response:
        session = ctx.session(request)
        try:
            query, metric = await read(request, session)
        except InvalidQuery as error:
            return invalid(request, session, "features.html", "features", error)
        tag_keys = await asyncio.to_thread(ctx.store.tag_keys, query.since, query.until, query.filters.project)
        chosen = query.tag_key if query.by == "tag" else None
        chosen = chosen or ("feature" if "feature" in tag_keys else (tag_keys[0] if tag_keys else None))
        choices = [Choice(f"tag:{key}", key) for key in _with(tag_keys, chosen)]
        if chosen is None:
            values = _values(query, metric)
            page_form = form(request, FEATURES, session, values, choices, "Tag key")
            return ctx.page(
                request, "features.html", session, section="features", form=page_form, error="", report=None
            )
        query = replace(query, by="tag", tag_key=chosen)
        try:
            report = await asyncio.to_thread(usage_report, ctx.store, query, ctx.settings.raw_rows_limit)
        except InvalidQuery as error:
            return invalid(request, session, "features.html", "features", error)
        values = _values(query, metric)
        return ctx.page(
            request,
            "features.html",
            session,
            section="features",
            form=form(request, FEATURES, session, values, choices, "Tag key"),
            error="",
            report=_report_view(report, metric, {}),
            tag_key=chosen,
            usage_link=f"{USAGE}?{urlencode(values)}",
        )

    async def cache(request: Request) -> Response:
        session = ctx.session(request)
        try:
            query, _ = await read(request, session)
            lines = await asyncio.to_thread(cache_report, ctx.store, query, ctx.prices, ctx.settings.raw_rows_limit)
        except InvalidQuery as error:
            return invalid(request, session, "cache.html", "cache", error)
        values = query.params()
        return ctx.page(
            request,
            "cache.html",
            session,
            section="cache",
            form=form(request, CACHE, session, values, [], buckets=False),
            error="",
            range=_range_text(query),
            cache=figures.cache_table(lines),
        )

    async def download(request: Request) -> Response:
        session = ctx.session(request)
        try:
            query = parse_export(request.query_params, ctx.wall_clock(), session.project)
        except InvalidQuery as error:
            title = "The export's parameters"
            return ctx.page(request, "error.html", session, 400, section="usage", title=title, message=str(error))
        return _Export(ctx.store, query)

    return [
        Route(USAGE, usage, methods=["GET"]),
        Route(FEATURES, features, methods=["GET"]),
        Route(CACHE, cache, methods=["GET"]),
        Route(EXPORT, download, methods=["GET"]),
    ]


class _Export(Response):
    """The ledger's rows of a range, streamed as `GET /admin/api/usage/export` streams them; a
    member's session gets its project's rows only."""

    def __init__(self, store: Store, query: ExportQuery) -> None:
        super().__init__()
        self._store = store
        self._query = query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await stream(self._store, self._query, receive, send)


def _usage(store: Store, query: Query, raw_rows_limit: int) -> tuple[UsageReport, list[str]]:
    """The report and the tag keys seen in its range (the dimension picker offers them)."""
    return usage_report(store, query, raw_rows_limit), store.tag_keys(query.since, query.until, query.filters.project)


@dataclass(frozen=True, slots=True)
class ReportView:
    """A usage report as the Usage and Features pages show it."""

    range: str
    summary: list[figures.Figure]
    chart: dict[str, object]
    metric_label: str
    table: figures.Table
    by: str | None
    tag_key: str | None
    group_heading: str


def _report_view(report: UsageReport, metric: Metric, key_names: Mapping[str, str]) -> ReportView:
    query = report.query
    return ReportView(
        _range_text(query),
        figures.summary(report.total),
        figures.chart(report, metric, key_names),
        figures.METRICS[metric],
        figures.table(report, key_names),
        query.by,
        query.tag_key,
        _heading(query),
    )


def _heading(query: Query) -> str:
    if query.by == "tag":
        return f"Tag {query.tag_key}" if query.tag_key else "Tag"
    return dict(_DIMENSIONS).get(query.by or "", "")


def _values(query: Query, metric: Metric) -> dict[str, str]:
    """The view as URL parameters: a split by nothing is spelled out (no `by` means by model),
    and the metric only when it is not cost."""
    changes = {"by": "none"} if query.by is None else {}
    if metric != "cost":
        changes["metric"] = metric
    return query.params(**changes)


def _export_params(query: Query, kind: str) -> dict[str, str]:
    """The view's parameters with its range spelled out: the export reads `since` and `until`
    (and the project), and takes every row of the range, whatever the view's other filters."""
    ends = {"since": local_text(query.since, query.tz), "until": local_text(query.until, query.tz)}
    return query.params(**ends, format=kind)


def _range_text(query: Query) -> str:
    return f"{figures.local_at(query.since, query.tz)} to {figures.local_at(query.until, query.tz)}"


def _dimensions(session: Session, tag_keys: list[str], current: str | None = None) -> list[Choice]:
    """What a report may be split by; a member sees one project, so not by project."""
    fixed = [Choice(v, label) for v, label in _DIMENSIONS if v != "project" or session.project is None]
    tags = [Choice(f"tag:{key}", f"Tag: {key}") for key in _with(tag_keys, current)]
    return [*fixed, Choice("tag", "Whole tags"), *tags, Choice("none", "Nothing (totals)")]


def _with(keys: list[str], current: str | None) -> list[str]:
    return keys if current is None or current in keys else [*keys, current]


def _zone_label(zone: str, now: float) -> str:
    try:
        moment = datetime.fromtimestamp(now, ZoneInfo(zone))
    except (KeyError, ValueError):
        return zone  # an unknown zone typed in the URL: the form shows it, the error names it
    return f"{zone} (UTC{figures.offset(moment)})"
