"""Both limiter backends behind one name, so the contract suite runs against each; a clock both
can be given; and a TCP proxy to cut a limiter off from Redis and let it back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from buzz.limits.base import Limiter
from buzz.limits.memory import MemoryLimiter
from buzz.limits.redis import RedisLimiter
from support import redis_url

REDIS_URL = redis_url(1)
SECOND_NS = 1_000_000_000


class Clock:
    """A clock the test moves, for both backends: the in-process limiter reads it as integer
    nanoseconds (its monotonic clock) and as seconds (its wall clock), the Redis scripts as
    microseconds since the epoch, in place of Redis's TIME. It moves in whole microseconds, the
    finest step Redis has, so both backends see the same moments."""

    def __init__(self, seconds: int) -> None:
        self.ns = seconds * SECOND_NS

    def advance(self, seconds: float) -> None:
        self.ns += round(seconds * 1_000_000) * 1000

    def nanos(self) -> int:
        return self.ns

    def wall(self) -> float:
        return self.ns / SECOND_NS

    def micros(self) -> int:
        return self.ns // 1000


@dataclass
class Backend:
    name: str
    prefix: str

    def make(self, clock: Clock | None = None, **options: Any) -> Limiter:
        if self.name == "memory":
            if clock is not None:
                options.update(clock=clock.nanos, wall=clock.wall)
            return MemoryLimiter(**options)
        if clock is not None:
            options.update(clock=clock.micros)
        return RedisLimiter(REDIS_URL, prefix=self.prefix, **options)

    def run(self, scenario: Callable[[Limiter], Awaitable[None]], **options: Any) -> None:
        """Run a scenario on a fresh limiter, inside one event loop, and close it after."""

        async def go() -> None:
            limiter = self.make(**options)
            try:
                await scenario(limiter)
            finally:
                await limiter.close()

        asyncio.run(go())


class CutProxy:
    """A TCP proxy in front of Redis that a test can cut and restore: cut, every connection
    through it is closed and new ones are closed at once (the client sees Redis go away, while
    Redis keeps its data and others can still reach it directly); restored, it relays again."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        self._open = False
        for writer in list(self._writers):
            writer.close()

    def restore(self) -> None:
        self._open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))
            writer.close()
            up_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()  # one side gone: so is the other
