"""Usage reports from the ledger's rollups, for the console, the admin API and `buzz usage`.

A report is a question (`Query`: a range, a time zone, hourly or daily buckets, a dimension to
split by, filters) answered from the store's rollups, regrouped into the asker's local hours or
days, so a day in Kolkata (UTC+05:30) or across a daylight-saving change is exactly that day,
and every bucket's label carries its offset. A question no rollup holds (a user or a tag with
another dimension) is read from raw rows, within a bound the caller sets (the console and the
usage API: `reports.raw_rows_limit`).

The query's parameters are the same everywhere: the console keeps them in its URL, the admin
API takes them as its query string, so a view can be shared as a link.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from buzz.billing.pricing import PriceBook
from buzz.billing.usage import Usage
from buzz.money import usd_exact
from buzz.store.base import (
    BUCKET_SECONDS,
    DIMENSIONS,
    Bucketing,
    Dimension,
    Filters,
    RollupLine,
    Store,
    Totals,
)

Bucket = Literal["hour", "day"]
RANGES = ("24h", "7d", "30d")
_RELATIVE = re.compile(r"(\d{1,5})([mhdw])")
_RELATIVE_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_STATUS = re.compile(r"([245])(xx)?")
# A range may hold at most this many buckets: a chart of more is unreadable, and it bounds the work.
MAX_BUCKETS = 24 * 400


class InvalidQuery(ValueError):
    """A parameter that cannot be read; the message names it."""


class TooManyRows(InvalidQuery):
    """A question no rollup holds, over a range with more raw rows than the caller allows."""


@dataclass(frozen=True, slots=True)
class Query:
    since: int  # unix seconds, a multiple of BUCKET_SECONDS
    until: int  # exclusive
    tz: ZoneInfo
    bucket: Bucket
    by: Dimension | None
    tag_key: str | None  # with by="tag": the key whose values split the report; None splits by whole tags
    filters: Filters
    range: str  # "24h", "7d", "30d" or "custom", for the console's range picker

    def params(self, **changes: str | None) -> dict[str, str]:
        """This query as URL parameters (a custom range as its two ends), with `changes` applied."""
        values: dict[str, str | None] = {
            "range": self.range,
            "tz": self.tz.key,
            "bucket": self.bucket,
            "by": "none" if self.by is None else (f"tag:{self.tag_key}" if self.tag_key else self.by),
            "project": self.filters.project,
            "key": self.filters.key_id,
            "model": self.filters.model,
            "user": self.filters.user_id,
            "tag": self.filters.tag,
            "status": None if self.filters.status_class is None else f"{self.filters.status_class}xx",
        }
        if self.range == "custom":
            values["since"] = local_text(self.since, self.tz)
            values["until"] = local_text(self.until, self.tz)
        values.update(changes)
        return {name: value for name, value in values.items() if value}


def local_text(ts: float, tz: tzinfo) -> str:
    """RFC 3339 with the zone's offset at that moment: 2026-12-06T05:30:00+05:30."""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def parse_query(params: Mapping[str, str], now: float, member_project: str | None) -> Query:
    """Read a query from URL parameters. A member's project overrides any `project` given, so
    no parameter can widen what a member sees."""
    tz = zone(params.get("tz") or "UTC")
    by, tag_key = _dimension(params.get("by", "model"))
    status = params.get("status") or None
    status_class = None
    if status is not None:
        match = _STATUS.fullmatch(status)
        if match is None:
            raise InvalidQuery("status: use 2xx, 4xx or 5xx")
        status_class = int(match.group(1))
    filters = Filters(
        project=member_project if member_project is not None else (params.get("project") or None),
        key_id=params.get("key") or None,
        model=params.get("model") or None,
        user_id=params.get("user") or None,
        tag=params.get("tag") or None,
        status_class=status_class,
    )
    since_text, until_text = params.get("since") or None, params.get("until") or None
    range_name = params.get("range") or ("custom" if since_text else "7d")
    bucket_text = params.get("bucket") or None
    if bucket_text not in (None, "hour", "day"):
        raise InvalidQuery("bucket: use hour or day")
    if range_name in RANGES:
        bucket = cast(Bucket, bucket_text or ("hour" if range_name == "24h" else "day"))
        until = _bucket_end(now, tz, bucket)
        since = _bucket_start(until - _RELATIVE_SECONDS[range_name[-1]] * int(range_name[:-1]), tz, bucket)
    elif range_name == "custom":
        if since_text is None:
            raise InvalidQuery("since: a custom range needs one")
        since = moment(since_text, "since", now, tz)
        until = moment(until_text, "until", now, tz) if until_text else int(now)
        # The rollups' resolution: a custom range is widened to whole quarter hours.
        since -= since % BUCKET_SECONDS
        until += -until % BUCKET_SECONDS
        span = until - since
        bucket = cast(Bucket, bucket_text or ("hour" if span <= 2 * 86400 else "day"))
    else:
        raise InvalidQuery("range: use 24h, 7d, 30d or custom")
    if until <= since:
        raise InvalidQuery("until: must be after since")
    if (until - since) // (3600 if bucket == "hour" else 86400) > MAX_BUCKETS:
        raise InvalidQuery(f"since: at most {MAX_BUCKETS} buckets; use daily buckets or a shorter range")
    return Query(since, until, tz, bucket, by, tag_key, filters, range_name)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidQuery(f"tz: unknown time zone {name!r}; use an IANA name such as Europe/Paris") from None


def _dimension(text: str) -> tuple[Dimension | None, str | None]:
    if text in ("", "none"):
        return None, None
    if text.startswith("tag:"):
        tag_key = text[4:]
        if not tag_key:
            raise InvalidQuery("by: name the tag key, as in tag:feature")
        return "tag", tag_key
    if text not in DIMENSIONS:
        raise InvalidQuery(f"by: use one of {', '.join(DIMENSIONS)} or tag:<key>")
    return text, None


def moment(text: str, name: str, now: float, tz: tzinfo) -> int:
    """A relative span back from now (30d), a date (midnight in `tz`), or RFC 3339."""
    match = _RELATIVE.fullmatch(text)
    if match:
        return int(now) - int(match.group(1)) * _RELATIVE_SECONDS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(f"{name}: use a duration back from now (30m, 24h, 7d, 2w), a date or RFC 3339") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return int(moment.timestamp())


def _bucket_start(ts: float, tz: tzinfo, bucket: Bucket) -> int:
    local = datetime.fromtimestamp(ts, tz)
    if bucket == "day":
        start = datetime.combine(local.date(), datetime.min.time(), tz)
    else:
        start = local.replace(minute=0, second=0, microsecond=0)
    return int(start.timestamp())


def _bucket_end(ts: float, tz: tzinfo, bucket: Bucket) -> int:
    """The end of the local hour or day that `ts` is in."""
    local = datetime.fromtimestamp(ts, tz)
    if bucket == "day":
        following: date = local.date() + timedelta(days=1)
        return int(datetime.combine(following, datetime.min.time(), tz).timestamp())
    return _bucket_start(ts, tz, bucket) + 3600


# --- the usage report ------------------------------------------------------------------------


# Groups with a series of their own, most cost first; the series of the others are summed in
# `UsageReport.rest`. A chart cannot tell more apart, and a split by two thousand users would
# otherwise read and build two thousand series.
SERIES_GROUPS = 20


@dataclass(slots=True)
class GroupLine:
    group: str  # "" for rows without a value: no key, no user, no tag of that key
    totals: Totals
    series: list[Totals]  # one per bucket of the report; empty past the first SERIES_GROUPS groups


@dataclass(slots=True)
class UsageReport:
    query: Query
    buckets: list[datetime]  # each bucket's local start, with its offset
    groups: list[GroupLine]  # most cost first
    total: Totals = field(default_factory=Totals)
    # The summed series of the groups past the first SERIES_GROUPS (all zero when there are none).
    rest: list[Totals] = field(default_factory=list)
    # With by=tag:<key>, the requests that carry no value of that key, so the split adds up.
    untagged: Totals | None = None


def usage_report(store: Store, query: Query, raw_limit: int | None = None) -> UsageReport:
    """From the rollups, two reads: each group's totals over the whole range (its whole days from
    daily sums), then the series per bucket of the groups that get one, and of everything, for
    the rest. From raw rows, one read of every group's series, which the totals are summed from.
    Raises TooManyRows when the raw reads would walk more than `raw_limit` rows."""
    buckets, bucketing, index_of = _local_buckets(query)
    since, until, filters, by, tag_key = query.since, query.until, query.filters, query.by, query.tag_key
    raw = raw_reads(store, query)
    _bound(query, raw, raw_limit)
    if raw[0]:
        groups, rest = _from_series(store.rollup(since, until, filters, by, tag_key, bucketing), len(buckets), index_of)
    else:
        groups, rest = _from_rollups(store, query, bucketing, len(buckets), index_of)
    total = Totals()
    for group in groups:
        total.add(group.totals)
    report = UsageReport(query, buckets, groups, total, rest)
    if by == "tag":
        # A request with two values of the key counts under each: the total is the requests'
        # own, and "untagged" is what carries no value of the key at all.
        report.total = _sum(store.rollup(since, until, filters, None))
        if tag_key is not None:
            keys = store.rollup(since, until, filters, "tag_key")
            carrying = _sum([line for line in keys if line.group == tag_key])
            rest_total = report.total.minus(carrying)
            report.untagged = rest_total if rest_total.requests else None
    return report


def raw_reads(store: Store, query: Query) -> list[int]:
    """The raw ledger rows each read of `usage_report` walks, 0 for those a rollup holds: the
    split itself, and for a tag split the requests' own total and, with a tag key, what carries
    none of it."""
    by = query.by
    splits: tuple[Dimension | None, ...] = (by,)
    if by == "tag":
        splits = (by, None, "tag_key") if query.tag_key is not None else (by, None)
    return [store.raw_rows(query.since, query.until, query.filters, split) for split in splits]


def _bound(query: Query, walked: list[int], raw_limit: int | None) -> None:
    if raw_limit is not None and sum(walked) > raw_limit:
        raise TooManyRows(_too_many(query, walked, raw_limit))


def _too_many(query: Query, walked: list[int], limit: int) -> str:
    named = [
        name
        for name, value in (
            ("a key", query.filters.key_id),
            ("a model", query.filters.model),
            ("a user", query.filters.user_id),
            ("a tag", query.filters.tag),
            ("a status", query.filters.status_class),
        )
        if value is not None
    ]
    split = f"a split by {query.params().get('by')}" if query.by is not None else "a total"
    rows, reads = max(walked), sum(1 for n in walked if n)
    times = "" if reads == 1 else f", read {'twice' if reads == 2 else f'{reads} times'} ({sum(walked):,} in all)"
    days = (query.until - query.since) / 86400 * limit / sum(walked)
    narrower = f"about {days:.0f} days" if days >= 1.5 else f"about {days * 24:.0f} hours"
    return (
        f"no rollup holds {split} narrowed to {' and '.join(named) or 'these filters'}, so it is read from raw "
        f"ledger rows: {rows:,} over this range{times}, more than the {limit:,} a report here may read. "
        f"Narrow the range to {narrower}, or remove a filter; `buzz usage` and the export read any range"
    )


def _from_series(
    lines: list[RollupLine], buckets: int, index_of: dict[int, int]
) -> tuple[list[GroupLine], list[Totals]]:
    """Groups most cost first, each with its series and totals, from one read of every group's
    lines per bucket; the series past the first SERIES_GROUPS summed into the rest."""
    by_group: dict[str, GroupLine] = {}
    for line in lines:
        group = by_group.get(line.group)
        if group is None:
            group = by_group[line.group] = GroupLine(line.group, Totals(), [Totals() for _ in range(buckets)])
        group.totals.add(line.totals)
        group.series[index_of[line.bucket]].add(line.totals)
    groups = sorted(by_group.values(), key=lambda g: (-g.totals.cost_nanos, -g.totals.requests, g.group))
    rest = [Totals() for _ in range(buckets)]
    for group in groups[SERIES_GROUPS:]:
        for i, totals in enumerate(group.series):
            rest[i].add(totals)
        group.series = []
    return groups, rest


def _from_rollups(
    store: Store, query: Query, bucketing: Bucketing, buckets: int, index_of: dict[int, int]
) -> tuple[list[GroupLine], list[Totals]]:
    since, until, filters, by, tag_key = query.since, query.until, query.filters, query.by, query.tag_key
    groups = [GroupLine(line.group, line.totals, []) for line in store.rollup(since, until, filters, by, tag_key)]
    groups.sort(key=lambda g: (-g.totals.cost_nanos, -g.totals.requests, g.group))
    shown = groups[:SERIES_GROUPS]
    for group in shown:
        group.series = [Totals() for _ in range(buckets)]
    by_group = {group.group: group for group in shown}
    only = list(by_group) if len(groups) > SERIES_GROUPS else None
    for line in store.rollup(since, until, filters, by, tag_key, bucketing, only):
        if (owner := by_group.get(line.group)) is not None:
            owner.series[index_of[line.bucket]].add(line.totals)
    rest = [Totals() for _ in range(buckets)]
    if only is not None:
        # Every row is in exactly one group, except by tag (a row is in each of its tags'), so
        # there the rest is read as it is; elsewhere it is everything less the groups shown.
        rest_by = by if by == "tag" else None
        for line in store.rollup(since, until, filters, rest_by, tag_key, bucketing):
            if line.group not in by_group or rest_by is None:
                rest[index_of[line.bucket]].add(line.totals)
        if rest_by is None:
            for group in shown:
                for i, totals in enumerate(group.series):
                    rest[i] = rest[i].minus(totals)
    return groups, rest


def _sum(lines: list[RollupLine]) -> Totals:
    total = Totals()
    for line in lines:
        total.add(line.totals)
    return total


def _local_buckets(query: Query) -> tuple[list[datetime], Bucketing, dict[int, int]]:
    """The report's local buckets in order, the offsets in force over the range (for the store
    to group by), and each bucket's index by its key (see `Bucketing.key`)."""
    length: Literal[3600, 86400] = 86400 if query.bucket == "day" else 3600
    starts: list[datetime] = []
    offsets: list[tuple[int, int]] = []
    index_of: dict[int, int] = {}
    for quarter in range(query.since, query.until, BUCKET_SECONDS):
        local = datetime.fromtimestamp(quarter, query.tz)
        delta = local.utcoffset()
        offset = int(delta.total_seconds()) if delta is not None else 0
        if not offsets or offsets[-1][1] != offset:
            offsets.append((quarter, offset))
        # Keyed by its UTC start, an hour repeated when summer time ends is two buckets,
        # 01:00+02:00 and 01:00+01:00; a day is its local date, however long it is.
        hour = (quarter + offset) // 3600 * 3600 - offset
        key = (quarter + offset) // 86400 if length == 86400 else hour
        if key not in index_of:
            index_of[key] = len(starts)
            if length == 86400:
                starts.append(datetime.combine(local.date(), datetime.min.time(), query.tz))
            else:
                starts.append(datetime.fromtimestamp(hour, query.tz))
    return starts, Bucketing(length, tuple(offsets)), index_of


# --- each key's spend ------------------------------------------------------------------------


def key_spend(store: Store, project: str | None, now: float) -> dict[str, tuple[Totals, Totals]]:
    """Each key's totals for the UTC day and the UTC month so far, from the rollups: the month's
    whole days from daily sums. Days and months in UTC, as spend caps count them."""
    moment = datetime.fromtimestamp(now, UTC)
    month = int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())
    today = int(now) // 86400
    until = int(now) + 1
    until += -until % BUCKET_SECONDS
    spend: dict[str, tuple[Totals, Totals]] = {}
    for line in store.rollup(month, until, Filters(project=project), "key", None, Bucketing(86400, ((month, 0),))):
        day, whole = spend.setdefault(line.group, (Totals(), Totals()))
        whole.add(line.totals)
        if line.bucket == today:
            day.add(line.totals)
    return spend


# --- cache economics -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheLine:
    provider: str
    model: str
    totals: Totals
    write_nanos: int | None  # what the cache writes cost, at buzz's price; None if unpriced
    saved_nanos: int | None  # what the cache reads saved against the same tokens as full input

    @property
    def read_share(self) -> float:
        """The share of all input tokens that was served from the cache."""
        t = self.totals
        total_input = t.input_tokens + t.cache_write_5m_tokens + t.cache_write_1h_tokens + t.cache_read_tokens
        return t.cache_read_tokens / total_input if total_input else 0.0


def cache_report(store: Store, query: Query, prices: PriceBook, raw_limit: int | None = None) -> list[CacheLine]:
    """Per model, from metadata only. Costs use the price in force at the range's end, at the
    base tier: a model's price change inside the range is not split out."""
    _bound(query, [store.raw_rows(query.since, query.until, query.filters, "provider_model")], raw_limit)
    per_model: dict[str, Totals] = {}
    for line in store.rollup(query.since, query.until, query.filters, "provider_model"):
        per_model.setdefault(line.group, Totals()).add(line.totals)
    when = datetime.fromtimestamp(query.until - 1, UTC)
    lines = []
    for group, totals in per_model.items():
        provider, _, model = group.partition("\x1f")
        price = prices.buzz_price(provider, model, when) if provider and model else None
        write = saved = None
        if price is not None:
            rates = price.base
            writes = Usage(
                cache_write_5m_tokens=totals.cache_write_5m_tokens, cache_write_1h_tokens=totals.cache_write_1h_tokens
            )
            write = rates.nanos_for(writes)
            saved = rates.nanos_for(Usage(input_tokens=totals.cache_read_tokens)) - rates.nanos_for(
                Usage(cache_read_tokens=totals.cache_read_tokens)
            )
        lines.append(CacheLine(provider, model, totals, write, saved))
    lines.sort(key=lambda c: (-(c.saved_nanos or 0), -c.totals.cache_read_tokens, c.model))
    return lines


# --- as JSON, for the admin API and `buzz usage --json` ---------------------------------------


def totals_json(t: Totals) -> dict[str, object]:
    return {
        "requests": t.requests,
        "errors": t.errors,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cache_write_5m_tokens": t.cache_write_5m_tokens,
        "cache_write_1h_tokens": t.cache_write_1h_tokens,
        "cache_read_tokens": t.cache_read_tokens,
        # Priced rows only; `unpriced` counts the others, so a consumer never takes a gap for $0.
        "cost_usd": usd_exact(t.cost_nanos),
        "list_cost_usd": usd_exact(t.list_cost_nanos),
        "savings_usd": usd_exact(t.list_cost_nanos - t.cost_nanos),
        "unpriced": t.unpriced,
        "estimated": t.estimated,
    }


_FILTERS = ("project", "key", "model", "user", "tag", "status")
_SERIES = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cost_nanos", "unpriced")


def report_json(report: UsageReport) -> dict[str, object]:
    q = report.query
    return {
        "since": local_text(q.since, q.tz),
        "until": local_text(q.until, q.tz),
        "tz": q.tz.key,
        "bucket": q.bucket,
        "by": q.params().get("by"),
        "filters": {name: value for name, value in q.params().items() if name in _FILTERS},
        "buckets": [_stamp(start) for start in report.buckets],
        "groups": [
            {
                "group": line.group,
                "totals": totals_json(line.totals),
                # Per bucket, aligned with "buckets": what a chart draws (the first groups only).
                **({"series": _series(line.series)} if line.series else {}),
            }
            for line in report.groups
        ],
        "rest": _series(report.rest),  # the series of the groups without one, summed
        "total": totals_json(report.total),
        "untagged": None if report.untagged is None else totals_json(report.untagged),
    }


def _series(series: list[Totals]) -> dict[str, list[int]]:
    return {name: [getattr(t, name) for t in series] for name in _SERIES}


def _stamp(start: datetime) -> str:
    return start.isoformat(timespec="seconds")
