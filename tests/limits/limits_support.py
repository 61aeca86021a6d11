"""Both limiter backends behind one name, so the contract suite runs against each."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from buzz.limits.base import Limiter
from buzz.limits.memory import MemoryLimiter
from buzz.limits.redis import RedisLimiter

REDIS_URL = os.environ.get("BUZZ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Backend:
    name: str
    prefix: str

    def make(self, **options: Any) -> Limiter:
        if self.name == "memory":
            return MemoryLimiter(**options)
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
