"""`GET /readyz`: ready while the store, the limiter's Redis and the ledger are, and 503 saying
which is not; `/healthz` answers all the while. PostgreSQL and Redis are the test's own, stopped
and started again under a running gateway."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from buzz.billing.ledger import LedgerRow, LedgerWriter
from buzz.billing.spool import Spool
from buzz.limits.memory import MemoryLimiter
from buzz.readiness import Readiness
from buzz.store import open_store
from fakes.fake_anthropic import FakeAnthropic
from pg_server import PostgresServer
from support import BuzzProcess, RedisServer, wait_until


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_embedded_default_is_ready(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake_session.url) as buzz:
        assert _get(buzz.url + "/readyz") == (
            200,
            {"status": "ready", "checks": {"store": "ok", "limiter": "ok", "ledger": "ok"}},
        )


def test_readiness_follows_the_database_and_redis(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    with PostgresServer() as database, RedisServer(tmp_path / "redis") as redis:
        env = {"BUZZ_DATABASE_URL": database.url, "BUZZ_REDIS_URL": redis.url}
        with BuzzProcess(tmp_path / "data", fake_session.url, env) as buzz:
            ready = buzz.url + "/readyz"
            assert _get(ready)[0] == 200

            redis.stop()
            status, body = _get(ready)
            assert status == 503 and body["status"] == "not ready"
            assert body["checks"]["limiter"].startswith("unreachable") and body["checks"]["store"] == "ok"
            assert _get(buzz.url + "/healthz")[0] == 200  # alive all the same
            redis.start()
            assert wait_until(lambda: _get(ready)[0] == 200, timeout=15)

            database.stop()
            status, body = _get(ready)
            assert status == 503 and body["checks"]["store"].startswith("unreachable")
            assert body["checks"]["limiter"] == "ok"
            database.start()
            assert wait_until(lambda: _get(ready)[0] == 200, timeout=30)


def test_a_ledger_far_behind_its_store_is_not_ready(tmp_path: Path) -> None:
    """Rows that pile up in the spool, a store that keeps refusing them: not ready past the limit."""
    store = open_store(tmp_path / "buzz.sqlite3")
    refused: list[int] = []

    def refuse(rows: Sequence[LedgerRow]) -> None:
        refused.append(len(rows))
        raise OSError("the store is away")

    ledger = LedgerWriter(refuse, Spool(tmp_path / "spool"), flush_interval=0.001)
    ledger.start()
    readiness = Readiness(store, MemoryLimiter(), ledger, backlog_limit=5)

    try:
        before = asyncio.run(readiness.check())
        for i in range(5):  # outside the event loop: each is handed to the spool at once
            ledger.submit(LedgerRow(f"req_{i}", 1765000000.0, "anthropic", 200, "reported", 1.0))
        assert wait_until(lambda: bool(refused))  # the store was tried, and refused them
        after = asyncio.run(readiness.check())
    finally:
        ledger.close(5)
        store.close()
    assert before == (True, {"store": "ok", "limiter": "ok", "ledger": "ok"})
    assert after == (False, {"store": "ok", "limiter": "ok", "ledger": "behind: 5 rows wait for the store"})
