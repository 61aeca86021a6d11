"""The hold board of a single process: holds live in the pool itself, so there is nothing to share."""

from __future__ import annotations

import time
from collections.abc import Callable

from buzz.pools.base import Hold, Holds, OnClear, OnHold


class MemoryBoard:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._holds: Holds = {}

    async def put(self, provider: str, credential: str, hold: Hold) -> Hold:
        current = self._holds.get((provider, credential))
        if current is not None and current.until >= hold.until:
            return current
        self._holds[(provider, credential)] = hold
        return hold

    async def clear(self, provider: str, credential: str, set_before: float) -> bool:
        current = self._holds.get((provider, credential))
        if current is None or current.since > set_before:
            return False
        del self._holds[(provider, credential)]
        return True

    async def read(self) -> Holds:
        now = self._clock()
        return {place: hold for place, hold in self._holds.items() if hold.until > now}

    async def start(self, on_hold: OnHold, on_clear: OnClear) -> None:
        return  # no other process to hear from

    async def close(self) -> None:
        return
