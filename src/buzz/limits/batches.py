"""Many requests' script calls in one: what arrives while a call is in flight goes in the next.

Redis runs one script at a time for every buzz process of a deployment, so its time per request
bounds them all. A script call costs Redis a fixed part (the call, the clock, reading and writing
each scope it touches) and a part per request; under load most requests in flight use the same
few keys and projects. So a process keeps at most one call of a script in flight: the requests
that arrive meanwhile wait for it, then go together in the next call, which reads and writes each
of their scopes once. A request that finds nothing in flight is sent at once, by its own task, so
a lone request pays nothing for this; under load a request waits at most for the call ahead of
it, and the batches grow with the load, as a database's group commit does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Part = list[int | float | str]
# One call for the parts of a batch, in order; returns one reply per part.
Send = Callable[[list[Part]], Awaitable[list[Any]]]
# Told of the parts of a call that failed or whose outcome is unknown (its sender was cancelled).
Failed = Callable[[list[Part], BaseException], None]


# The most requests one call carries: after a stall, what waits goes in several calls, each well
# within a call's deadline and Lua's limit on the values one `unpack` can spread.
MAX_PARTS = 256


class Batches:
    def __init__(self, send: Send, failed: Failed | None = None, *, cancellable: bool = False) -> None:
        """`cancellable`: a part whose caller stopped waiting is not sent (a reserve nobody
        would settle); otherwise every part goes (a settlement must land)."""
        self._send = send
        self._failed = failed
        self._cancellable = cancellable
        self._busy = False  # a call is in flight, or about to be
        self._waiting: list[tuple[Part, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def call(self, part: Part) -> Any:
        """This part's reply; raises what its call raised."""
        if self._busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append((part, future))
            return await future
        self._busy = True
        try:
            replies = await self._send([part])
        except BaseException as error:
            if self._failed is not None:
                self._failed([part], error)
            raise
        finally:
            # What came meanwhile goes next, from a task: this request has its answer.
            if self._waiting:
                self._task = asyncio.get_running_loop().create_task(self._run())
            else:
                self._busy = False
        return replies[0]

    async def _run(self) -> None:
        batch: list[tuple[Part, asyncio.Future[Any]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_PARTS], self._waiting[MAX_PARTS:]
                if self._cancellable:
                    batch = [(part, future) for part, future in batch if not future.done()]
                    if not batch:
                        continue
                parts = [part for part, _ in batch]
                try:
                    replies = await self._send(parts)
                    if len(replies) != len(batch):
                        raise ValueError(f"{len(replies)} replies for a batch of {len(batch)}")
                except asyncio.CancelledError as error:
                    if self._failed is not None:
                        self._failed(parts, error)  # sent or not, nobody will know: as if lost
                    raise
                except Exception as error:
                    if self._failed is not None:
                        self._failed(parts, error)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), reply in zip(batch, replies, strict=True):
                    if not future.done():  # its request may have been cancelled meanwhile
                        future.set_result(reply)
        finally:
            self._busy = False
            self._task = None
            # Cancelled (the limiter closing): nobody will answer these.
            for _, future in batch + self._waiting:
                if not future.done():
                    future.cancel()
            self._waiting = []

    async def drain(self) -> None:
        """Wait until what waits has been sent and answered."""
        while self._task is not None:
            await asyncio.shield(self._task)
