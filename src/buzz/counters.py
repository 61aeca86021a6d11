"""Counts of what happened that leaves no ledger row, or happened beside one.

A refused key, a settlement that failed and was queued for a retry, a meter that gave up on an
oversized body: each is an event an operator must be able to see, but none is a request to bill.
One `Counters` is made per gateway and passed to whatever counts; the admin API reads it.
"""

from __future__ import annotations

from collections import Counter


class Counters:
    """Named event counts, only ever incremented. Names are fixed strings in the code that counts,
    never text from a request, so the set of names stays small."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self._counts[name] += n

    def get(self, name: str) -> int:
        return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))
