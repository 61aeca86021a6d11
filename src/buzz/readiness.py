"""`GET /readyz`: whether this process can serve requests well, for a load balancer to route by.

`/healthz` says the process is alive; this says what it depends on is there. Ready means:
- the store (SQLite, or PostgreSQL) answers a query;
- the limiter's state (Redis, when configured) answers a PING;
- the ledger is keeping up: its spool takes rows, and fewer than `backlog_limit` wait for the
  store.
Each probe has a deadline, and a store probe still running from an earlier check (a database
that hangs holds its thread) counts as not ready instead of starting another.
"""

from __future__ import annotations

import asyncio

from buzz.billing.ledger import LedgerWriter
from buzz.limits.base import Limiter, LimiterUnavailable
from buzz.store.base import Store, StoreUnavailable

PROBE_SECONDS = 1.0
DEFAULT_BACKLOG_LIMIT = 1_000_000  # rows waiting for the store: minutes of traffic, not seconds


class Readiness:
    def __init__(
        self, store: Store, limiter: Limiter, ledger: LedgerWriter, backlog_limit: int = DEFAULT_BACKLOG_LIMIT
    ) -> None:
        self._store = store
        self._limiter = limiter
        self._ledger = ledger
        self._backlog_limit = backlog_limit
        self._store_probe: asyncio.Future[None] | None = None

    async def check(self) -> tuple[bool, dict[str, str]]:
        """Whether ready, and each dependency's state: "ok", or why not."""
        store, limiter = await asyncio.gather(self._probe_store(), self._probe_limiter())
        checks = {"store": store, "limiter": limiter, "ledger": self._ledger_state()}
        return all(state == "ok" for state in checks.values()), checks

    async def _probe_store(self) -> str:
        if self._store_probe is not None and not self._store_probe.done():
            return "unreachable: an earlier probe has not returned"
        probe = asyncio.ensure_future(asyncio.to_thread(self._store.ping))
        self._store_probe = probe
        try:
            await asyncio.wait_for(asyncio.shield(probe), PROBE_SECONDS)
        except TimeoutError:
            return f"unreachable: no answer within {PROBE_SECONDS:g} s"
        except StoreUnavailable:
            return "unreachable"
        except Exception as exc:  # any other failure of the probe is as bad
            return f"failing: {type(exc).__name__}"
        return "ok"

    async def _probe_limiter(self) -> str:
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                await self._limiter.ping()
        except TimeoutError:
            return f"unreachable: no answer within {PROBE_SECONDS:g} s"
        except LimiterUnavailable:
            return "unreachable"
        return "ok"

    def _ledger_state(self) -> str:
        if self._ledger.spool_failing:
            return "spool failing: rows cannot be kept on disk"
        backlog = self._ledger.backlog
        if backlog >= self._backlog_limit:
            return f"behind: {backlog} rows wait for the store"
        return "ok"
