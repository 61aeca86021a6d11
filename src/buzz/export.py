"""The ledger as a file: every field of every row in a range, oldest first, as CSV or JSON lines.

Shared by `GET /admin/api/usage/export`, the console's export link and `buzz export`. Rows come
from the store in batches and leave as bytes batch by batch, so an export of any size holds one
batch in memory. Each row ends with a `cursor`: pass the last one received back as `cursor=` and
the export resumes after that row, so a cut download is finished, not restarted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

from buzz.asgi import Receive, Send
from buzz.billing.ledger import LedgerRow
from buzz.errors import where
from buzz.reports import InvalidQuery, moment, zone
from buzz.store.base import Store
from buzz.store.lines import render

log = logging.getLogger("buzz.export")

Format = Literal["csv", "jsonl"]
MEDIA_TYPES: dict[Format, bytes] = {"csv": b"text/csv; charset=utf-8", "jsonl": b"application/x-ndjson"}
COLUMNS = (
    "id",
    "ts",
    "project",
    "key_id",
    "user_id",
    "tags",
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
    "cost_usd",
    "list_cost_nanos",
    "list_cost_usd",
    "price_version",
    "latency_ms",
    "ttfb_ms",
    "upstream_request_id",
    "cursor",
)
# A row's place: its stored UTC time and its id, "2026-12-06T07:17:21.123Z~req_…".
_CURSOR = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)~(\S{1,64})")


@dataclass(frozen=True, slots=True)
class ExportQuery:
    since: int
    until: int
    project: str | None  # a member's own project, always
    after: tuple[float, str] | None
    format: Format
    tz: tzinfo

    @property
    def filename(self) -> str:
        day = datetime.fromtimestamp(self.since, self.tz).strftime("%Y%m%d")
        last = datetime.fromtimestamp(self.until - 1, self.tz).strftime("%Y%m%d")
        return f"buzz-usage-{day}-{last}.{self.format}"


def parse_export(params: Mapping[str, str], now: float, member_project: str | None) -> ExportQuery:
    """`since` (a date, RFC 3339 or a span back from now such as 30d) is required; `until` is
    now unless given. A member's project overrides any `project` parameter."""
    tz = zone(params.get("tz") or "UTC")
    since_text = params.get("since")
    if not since_text:
        raise InvalidQuery("since: required, as a date (2026-11-01), RFC 3339 or a span such as 30d")
    since = moment(since_text, "since", now, tz)
    until_text = params.get("until")
    until = moment(until_text, "until", now, tz) if until_text else int(now) + 1
    if until <= since:
        raise InvalidQuery("until: must be after since")
    fmt = params.get("format") or "csv"
    if fmt not in ("csv", "jsonl"):
        raise InvalidQuery("format: use csv or jsonl")
    after = None
    if cursor := params.get("cursor"):
        match = _CURSOR.fullmatch(cursor)
        if match is None:
            raise InvalidQuery("cursor: pass back the cursor of the last row received")
        after = (datetime.fromisoformat(match[1]).timestamp(), match[2])
    project = member_project if member_project is not None else (params.get("project") or None)
    return ExportQuery(since, until, project, after, "csv" if fmt == "csv" else "jsonl", tz)


class _LocalTimes:
    """Row times as RFC 3339 in the export's zone, with milliseconds and the offset; rows come in
    time order, so each second is converted once."""

    __slots__ = ("_prefix", "_second", "_tz")

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz
        self._second = -1
        self._prefix = ("", "")

    def __call__(self, millis: int) -> str:
        second, fraction = divmod(millis, 1000)
        if second != self._second:
            self._second = second
            local = datetime.fromtimestamp(second, self._tz).isoformat(timespec="seconds")
            self._prefix = (local[:19], local[19:])  # "2026-12-06T12:47:21", "+05:30"
        head, offset = self._prefix
        return f"{head}.{fraction:03d}{offset}"


def lines(store: Store, query: ExportQuery) -> Iterator[bytes]:
    """The export's bytes, one piece per batch of rows (the CSV header first), rendered by the
    store: what `encode` makes of the same rows, faster."""
    if query.format == "csv":
        yield HEADER
    offsets = zone_offsets(query.tz, query.since, query.until)
    yield from store.export_lines(query.since, query.until, query.project, query.after, query.format, offsets)


HEADER = (",".join(COLUMNS) + "\r\n").encode()  # RFC 4180


def zone_offsets(tz: tzinfo, since: int, until: int) -> list[tuple[int, int, str]]:
    """The offsets `tz` has over [since, until): (from, seconds, "+05:30"), the first from since.
    Walked by the hour, and to the quarter hour where the offset changed (every change in use
    falls on one)."""

    def at(t: int) -> tuple[int, str]:
        local = datetime.fromtimestamp(t, tz)
        delta = local.utcoffset()
        return (int(delta.total_seconds()) if delta is not None else 0), local.isoformat(timespec="seconds")[19:]

    first = at(since)
    found = [(since, *first)]
    t = since - since % 3600
    while t < until:
        following = t + 3600
        if following < until and at(following)[0] != found[-1][1]:
            change = next(q for q in range(t + 900, following + 1, 900) if at(q)[0] != found[-1][1])
            found.append((change, *at(change)))
        t = following
    return found


def encode(batches: Iterator[list[LedgerRow]], query: ExportQuery) -> Iterator[bytes]:
    """The export's bytes made in Python from ledger rows, one piece per batch (the CSV header
    first): the reference the stores' `export_lines` are held to."""
    if query.format == "csv":
        yield HEADER
    yield from render(batches, query.format, _LocalTimes(query.tz))


# --- over HTTP ----------------------------------------------------------------------------


async def stream(store: Store, query: ExportQuery, receive: Receive, send: Send) -> None:
    """The export as a chunked response; also the console's export route.

    Stops reading the ledger as soon as the client hangs up. A failure after the first byte
    cannot become an error answer any more: the response is left unfinished, which the client
    sees as a cut download it can resume with the last cursor it holds."""
    pieces = lines(store, query)
    disposition = f'attachment; filename="{query.filename}"'.encode()
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", MEDIA_TYPES[query.format]),
                    (b"cache-control", b"no-store"),
                    (b"content-disposition", disposition),
                ],
            }
        )
        while not gone.is_set() and (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b""})
    except Exception as exc:
        log.error("usage export stopped: %s at %s", type(exc).__name__, where(exc))
    finally:
        watcher.cancel()
        await asyncio.to_thread(_close, pieces)


def _close(pieces: Iterator[bytes]) -> None:
    # Closing the generator closes the store's reading connection, in a thread: it may wait.
    close = getattr(pieces, "close", None)
    if close is not None:
        close()
