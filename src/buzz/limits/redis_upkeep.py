"""What the Redis limiter does in the background: settlements that must land, leases that must last.

A settlement Redis does not take (an outage) is kept in a bounded queue and retried, with
backoff, until Redis takes it: until then the reservation's worst case stays charged and its
concurrency slot stays held. Settling is idempotent (a marker key), so a retry after a reply
that was lost is harmless.

A concurrency slot is a lease of a few seconds. One call per process renews the leases of every
request it has in flight, so a slot lives as long as its request, and a slot whose request has
ended without a settlement Redis took (its process died, or the settlement was dropped) is free
again within one lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from buzz.counters import Counters

log = logging.getLogger("buzz.limits")

# One script call: its arguments in, its reply out; raises one of `unavailable` in an outage.
Call = Callable[[list[int | float | str]], Awaitable[Any]]


class Settlements:
    """Settlements that Redis did not take at once, retried in order in the background.

    The limiter makes the first attempt itself, on the request path with nothing in between,
    and hands `keep` what Redis did not take.

    Counts, in `counters`: `limiter_settle_failed` for every settlement not delivered at once
    (its attempt failed, or an outage was already under way), then `limiter_settle_retried_ok`
    when Redis takes it, or `limiter_settle_dropped` when it is given up: the queue was full,
    or it was still queued when the limiter closed. So failed = retried_ok + dropped + queued.
    A dropped settlement leaves its reservation's worst case charged (tokens until they refill,
    spend and prepaid balance for good: the balance stays lower, or higher when the request cost
    more than reserved) and its slot held until its lease runs out. The ledger row is written
    either way: what was billed is never lost.
    """

    def __init__(
        self,
        call: Call,
        unavailable: tuple[type[BaseException], ...],
        counters: Counters,
        *,
        limit: int,
        first_delay: float,
        max_delay: float,
        close_timeout: float,
    ) -> None:
        self._call = call
        self._unavailable = unavailable
        self._counters = counters
        self._limit = limit
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._close_timeout = close_timeout
        # What waits for Redis, oldest first. Public so the request path can test it without a
        # call: while anything waits, an outage is under way.
        self.queue: deque[list[int | float | str]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._full = False  # logged that the queue is full, once per outage

    def keep(self, args: list[int | float | str], error: BaseException | None = None) -> None:
        """Queue a settlement Redis did not take (`error`), or one that arrived while others
        wait (no error): it keeps their order and spares its request another timeout."""
        if error is not None and not self.queue:  # the first of this outage
            name = type(error).__name__
            log.warning("limiter: Redis did not take a settlement (%s); queued, retrying in the background", name)
        self._counters.add("limiter_settle_failed")
        if len(self.queue) >= self._limit:
            self._counters.add("limiter_settle_dropped")
            if not self._full:
                self._full = True
                log.error("limiter: settlement queue full (%d); dropping settlements until Redis is back", self._limit)
            return
        self.queue.append(args)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        delay = self._first_delay
        while self.queue:
            # Jittered, so the processes of a deployment do not all come back at the same moment.
            await asyncio.sleep(random.uniform(delay / 2, delay))
            try:
                while self.queue:
                    await self._call(self.queue[0])
                    self.queue.popleft()
                    self._counters.add("limiter_settle_retried_ok")
            except self._unavailable:
                delay = min(delay * 2, self._max_delay)
            except Exception as error:
                # A fault, not an outage: this settlement would fail the same way every time.
                log.error("limiter: a queued settlement failed with %s; dropped", type(error).__name__)
                self.queue.popleft()
                self._counters.add("limiter_settle_dropped")
        self._full = False
        log.warning("limiter: Redis took every queued settlement")

    async def close(self) -> None:
        """One last attempt, bounded in time, at what is still queued; the rest is dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.queue:
            return
        with contextlib.suppress(TimeoutError, *self._unavailable):
            async with asyncio.timeout(self._close_timeout):
                while self.queue:
                    await self._call(self.queue[0])
                    self.queue.popleft()
                    self._counters.add("limiter_settle_retried_ok")
        if self.queue:
            self._counters.add("limiter_settle_dropped", len(self.queue))
            log.error("limiter: %d settlements not delivered at shutdown", len(self.queue))
            self.queue.clear()


class Leases:
    """The concurrency slots this process holds, renewed together on a timer."""

    def __init__(
        self,
        call: Call,
        unavailable: tuple[type[BaseException], ...],
        counters: Counters,
        *,
        lease_us: int,
        every: float,
        clock: Callable[[], str],
    ) -> None:
        self._call = call
        self._unavailable = unavailable
        self._counters = counters
        self._lease_us = lease_us
        self._every = every
        self._clock = clock
        # Reservation id -> its marker key and the concurrency keys it holds a slot in.
        self._held: dict[str, tuple[str, list[str]]] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, rid: str, marker: str, keys: list[str]) -> None:
        self._held[rid] = (marker, keys)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._renew_forever())

    def release(self, rid: str) -> None:
        """The request ended: its lease is no longer renewed, settled or not."""
        self._held.pop(rid, None)

    async def renew(self) -> None:
        """One call for every slot held, whatever their number."""
        if not self._held:
            return
        args: list[int | float | str] = [self._lease_us, self._clock()]
        for rid, (marker, keys) in self._held.items():
            args += [marker, rid, len(keys), *keys]
        try:
            await self._call(args)
        except self._unavailable:
            # The next renewal may still come in time; if none does, the slots lapse, which
            # is what a lease is for.
            self._counters.add("limiter_lease_renew_failed")

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.renew()
            except Exception as error:
                log.error("limiter: lease renewal failed with %s", type(error).__name__)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
