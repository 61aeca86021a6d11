"""Time as the SQLite store keeps it: sortable UTC text with milliseconds, 2026-12-06T07:17:21.123Z.

SQLite's date functions read this text as it is, and it sorts as time does. Both directions run
for every ledger row written or exported, so both parse or format each second once.
"""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class RowTimes:
    """`iso` for the ledger writer: the rows of a batch mostly share their second, so each
    second's text is made once (strftime is slow)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, ts: float) -> str:
        # Rounded to the microsecond first, the way datetime.fromtimestamp does, then cut to milliseconds.
        second = math.floor(ts)
        micros = round((ts - second) * 1e6)
        if micros == 1_000_000:
            second, micros = second + 1, 0
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{micros // 1000:03d}Z"


class TextTimes:
    """The stored text back to unix seconds, for readers of many rows in time order."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._text = ""
        self._second = 0

    def __call__(self, text: str) -> float:
        head = text[:19]
        if head != self._text:
            self._text = head
            self._second = calendar.timegm(
                (int(head[0:4]), int(head[5:7]), int(head[8:10]), int(head[11:13]), int(head[14:16]), int(head[17:19]))
            )
        millis = text[20:23]
        return self._second + (int(millis) / 1000 if millis else 0.0)
