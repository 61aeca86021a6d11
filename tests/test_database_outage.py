"""PostgreSQL going away under a running gateway, on a server of the test's own: known keys are
still served, unknown keys get 503 (never 401), every row waits in the spool and is written
exactly once when the database returns, and neither SIGTERM nor SIGKILL loses a spooled row."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from buzz.proxy.auth import generate_key
from fakes.fake_anthropic import FakeAnthropic
from pg_server import PostgresServer
from support import BuzzProcess, raw_post, redis_url, wait_until

BODY = b'{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
ADMIN = "admin-secret-for-outage-tests"


@pytest.fixture
def database() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def _env(database: PostgresServer) -> dict[str, str]:
    return {"BUZZ_DATABASE_URL": database.url, "BUZZ_REDIS_URL": redis_url(4), "BUZZ_ADMIN_TOKEN": ADMIN}


def _send(buzz: BuzzProcess, token: str) -> tuple[int, bytes]:
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    status, _, body = raw_post(buzz.url, "/v1/messages", BODY, headers)
    return status, body


def _spooled(data_dir: Path) -> int:
    """Rows waiting in the data directory's spool files."""
    total = 0
    for path in (data_dir / "spool").glob("ledger-*.jsonl"):
        try:
            total += path.read_bytes().count(b"\n")
        except FileNotFoundError:  # written and removed since the listing
            continue
    return total


def _under_load(buzz: BuzzProcess, token: str, count: int) -> list[int]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: _send(buzz, token)[0], range(count)))


def test_known_keys_are_served_through_an_outage_and_every_row_is_written_once(
    tmp_path: Path, database: PostgresServer, fake_session: FakeAnthropic
) -> None:
    with BuzzProcess(tmp_path / "data", fake_session.url, _env(database)) as buzz:
        token = buzz.create_key("acme")
        assert _send(buzz, token)[0] == 200  # the key is now in the gateway's cache
        assert len(buzz.ledger(count=1)) == 1
        database.stop()

        assert _under_load(buzz, token, 200) == [200] * 200
        status, body = _send(buzz, generate_key().token)  # a key it has never seen
        assert status == 503
        assert json.loads(body)["error"]["type"] == "gateway_unavailable_error"
        request = urllib.request.Request(f"{buzz.url}/admin/api/keys", headers={"authorization": f"Bearer {ADMIN}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 503
        assert wait_until(lambda: _spooled(buzz.data_dir) == 200, timeout=10)

        database.start()
        rows = buzz.ledger(count=201, timeout=30)
        assert len(rows) == 201 and len({row["id"] for row in rows}) == 201
        assert wait_until(lambda: _spooled(buzz.data_dir) == 0, timeout=10)
        assert _send(buzz, token)[0] == 200  # and on it goes
        assert _send(buzz, buzz.create_key("acme"))[0] == 200  # a key it must look up: no 503
        assert len(buzz.ledger(count=203)) == 203


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_rows_spooled_during_an_outage_survive_the_process_and_are_written_once(
    tmp_path: Path, database: PostgresServer, fake_session: FakeAnthropic, sig: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    buzz = BuzzProcess(data_dir, fake_session.url, _env(database))
    with buzz:
        token = buzz.create_key("acme")
        assert _send(buzz, token)[0] == 200
        assert len(buzz.ledger(count=1)) == 1
        database.stop()
        assert _under_load(buzz, token, 60) == [200] * 60
        assert wait_until(lambda: _spooled(data_dir) == 60, timeout=10)
        buzz.stop(sig)
    assert _spooled(data_dir) == 60  # left for the next start
    database.start()
    with BuzzProcess(data_dir, fake_session.url, _env(database)) as again:
        rows = again.ledger(count=61, timeout=30)
        assert len(rows) == 61 and len({row["id"] for row in rows}) == 61
        assert wait_until(lambda: not list((data_dir / "spool").glob("ledger-*.jsonl"))[1:], timeout=10)
        assert _spooled(data_dir) == 0
        assert len(again.ledger()) == 61  # nothing written twice


def test_a_lookup_after_the_database_came_back_does_not_fail_on_the_connection_it_lost(
    database: PostgresServer,
) -> None:
    from buzz.store.postgres import PostgresStore

    store = PostgresStore(database.url)
    try:
        store.create_key("k1", "acme", None, b"h" * 32)
        assert asyncio.run(store.find_key("k1")) is not None
        database.stop()  # the lookup connection dies, and nothing uses it meanwhile
        database.start()
        assert asyncio.run(store.find_key("k1")) is not None
        assert store.project("acme") is not None
    finally:
        store.close()
