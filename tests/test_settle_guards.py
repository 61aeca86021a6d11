"""Settling never raises into the server: the row and the reservation are settled independently.

These drive `Pipeline.handle` in process, against a real fake upstream over HTTP, with one of
buzz's own parts made to fail on purpose, which a running gateway cannot be made to do on cue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from buzz import config as config_module
from buzz.billing.ledger import LedgerRow, LedgerWriter
from buzz.billing.pricing import PriceBook
from buzz.billing.spool import Spool
from buzz.catalogue import Catalogue
from buzz.counters import Counters
from buzz.forwarded import TrustedProxies
from buzz.limits.base import Limits, Reservation
from buzz.limits.memory import MemoryLimiter
from buzz.pools.memory import MemoryBoard
from buzz.pools.pool import Pools
from buzz.proxy.admit import Admission
from buzz.proxy.auth import Authenticator, generate_key
from buzz.proxy.batches import Batches
from buzz.proxy.forward import make_session
from buzz.proxy.pipeline import Pipeline
from buzz.proxy.route import Router
from buzz.proxy.settle import Settler
from buzz.routes import MESSAGES
from buzz.store.sqlite import SQLiteStore
from fakes.fake_anthropic import FakeAnthropic

BODY = b'{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}'


class FailingLimiter(MemoryLimiter):
    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int, cost_nanos: int) -> None:
        raise RuntimeError("settle broke")


class FailingLedger(LedgerWriter):
    def submit(self, row: LedgerRow) -> None:
        raise RuntimeError("ledger broke")


async def _never_probed(provider: str, credential: config_module.CredentialConfig) -> int:
    raise AssertionError("a pool of one is never probed")


async def _request(pipeline: Pipeline, token: str) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/messages",
        "raw_path": b"/v1/messages",
        "query_string": b"",
        "headers": [(b"x-api-key", token.encode()), (b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 5000),
    }
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await pipeline.handle(scope, receive, send, MESSAGES, {})
    return sent


def _run(
    tmp_path: Path, fake: FakeAnthropic, limiter: MemoryLimiter, broken_ledger: bool
) -> tuple[list[Any], list[LedgerRow], Counters]:
    config = config_module.load(None, env={"ANTHROPIC_API_KEY": "sk-test", "BUZZ_ANTHROPIC_BASE_URL": fake.url})
    store = SQLiteStore(tmp_path / "buzz.sqlite3")
    new = generate_key()
    store.create_key(new.key_id, "p", None, new.secret_hash, Limits(concurrency=1))
    written: list[LedgerRow] = []

    def write(rows: Sequence[LedgerRow]) -> None:
        written.extend(rows)

    ledger = (FailingLedger if broken_ledger else LedgerWriter)(write, Spool(tmp_path / "spool"), 0.01)
    ledger.start()
    prices = PriceBook()
    counters = Counters()

    async def go() -> list[Any]:
        session = make_session(5, 30)
        pipeline = Pipeline(
            Authenticator(store),
            Router(config, Catalogue.default()),
            Settler(prices, ledger),
            session,
            config.max_body_bytes,
            config.max_upload_bytes,
            Admission(limiter, prices),
            Batches(store, prices, ledger),
            Pools(config, MemoryBoard(), _never_probed, counters),
            counters,
            TrustedProxies(),
        )
        try:
            # Twice: with a concurrency limit of 1, the second is admitted only if the first
            # request's slot came back.
            return [await _request(pipeline, new.token), await _request(pipeline, new.token)]
        finally:
            await session.close()

    try:
        answers = asyncio.run(go())
    finally:
        ledger.close()
        store.close()
    return answers, written, counters


def test_a_failing_ledger_settle_still_returns_the_concurrency_slot(tmp_path: Path, fake: FakeAnthropic) -> None:
    answers, written, counters = _run(tmp_path, fake, MemoryLimiter(), broken_ledger=True)
    assert [answer[0]["status"] for answer in answers] == [200, 200]
    assert counters.get("ledger_settle_failed") == 2 and written == []


def test_a_failing_limiter_settle_still_leaves_the_row(tmp_path: Path, fake: FakeAnthropic) -> None:
    answers, written, counters = _run(tmp_path, fake, FailingLimiter(), broken_ledger=False)
    # The first request's slot was never given back (its settle failed), so the second is refused,
    # and each leaves its row; the failure is counted, not raised into the server.
    assert [answer[0]["status"] for answer in answers] == [200, 429]
    assert [row.status for row in written] == [200, 429]
    assert counters.get("limiter_settle_failed") == 1
