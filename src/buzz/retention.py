"""`ledger.retention_days`: raw ledger rows older than that are deleted; the rollups keep their sums.

Deletion runs in chunks, each its own short transaction, so the ledger writer never waits long
for the database; a pass runs at start and then every `interval` seconds. Unset, buzz keeps every
row forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from buzz.store.base import Store

log = logging.getLogger("buzz.retention")
CHUNK = 5000


class Retention:
    def __init__(
        self, store: Store, days: int, wall_clock: Callable[[], float], interval: float = 60.0, chunk: int = CHUNK
    ) -> None:
        self._store = store
        self._days = days
        self._wall_clock = wall_clock
        self._interval = interval
        self._chunk = chunk

    async def prune(self) -> int:
        """One pass: every row older than the retention, chunk by chunk. Returns how many went."""
        before = self._wall_clock() - self._days * 86400
        removed = 0
        while True:
            count = await asyncio.to_thread(self._store.prune_ledger, before, self._chunk)
            removed += count
            if count < self._chunk:
                break
        if removed:
            log.info("retention: %d ledger rows older than %d days removed; their sums stay", removed, self._days)
        return removed

    async def run(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception as exc:
                # Only the type: a database error's text may quote the statement's parameters.
                log.error("retention pass failed (%s); next try in %.0f s", type(exc).__name__, self._interval)
            await asyncio.sleep(self._interval)
