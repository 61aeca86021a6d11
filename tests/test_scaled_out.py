"""Several buzz processes on one PostgreSQL and one Redis, as several hosts run them: each process
has a data directory of its own and shares nothing else. Keys, revocations, limit changes and
console tokens made anywhere reach every process; limits are held once for all of them; every
request leaves exactly one ledger row in the shared database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from buzz import console_tokens
from buzz.proxy.auth import generate_key
from console.console_support import Client
from fakes.fake_anthropic import FakeAnthropic
from stores import Postgres
from support import BuzzProcess, raw_post, redis_url

BODY = b'{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
# How long a test waits for a change to be seen: it only bounds a failing run (the store hears of
# changes by notification, within milliseconds; docs/deploy.md gives the figure).
PATIENCE = 5.0

Hosts = Callable[..., list[BuzzProcess]]


@pytest.fixture
def hosts(tmp_path: Path, postgres: Postgres, fake_session: FakeAnthropic) -> Iterator[Hosts]:
    """`hosts(n, **env)`: n buzz processes on one fresh database and the shared Redis."""
    url = postgres.new_url()
    started: list[BuzzProcess] = []

    def start(count: int, **env: str) -> list[BuzzProcess]:
        shared = {"BUZZ_DATABASE_URL": url, "BUZZ_REDIS_URL": redis_url(4), **env}
        for _ in range(count):
            process = BuzzProcess(tmp_path / f"host{len(started)}" / "data", fake_session.url, shared)
            started.append(process.start())
        return started[-count:]

    yield start
    for process in started:
        process.stop()


def _send(buzz: BuzzProcess, token: str) -> int:
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    return raw_post(buzz.url, "/v1/messages", BODY, headers)[0]


def _until(condition: Callable[[], bool]) -> float:
    """Seconds until `condition` held (asserted to hold within PATIENCE)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < PATIENCE, "the change never reached this process"
        time.sleep(0.01)
    return time.monotonic() - start


def test_a_key_made_on_one_host_works_on_the_others_and_its_revocation_reaches_them(hosts: Hosts) -> None:
    a, b = hosts(2)
    token = a.create_key(project="acme", name="web")
    key_id = token.split("-")[1]
    assert _send(a, token) == 200 and _send(b, token) == 200  # both now hold it in their caches
    revoked = a.cli("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    for host in (a, b):
        _until(lambda host=host: _send(host, token) == 401)  # type: ignore[misc]
    # A refused key leaves no row (anyone could fill the ledger with them): the two served do.
    rows = a.ledger(count=2, where=lambda row: row["key_id"] == key_id)
    assert [row["status"] for row in rows] == [200, 200]


def test_a_limit_changed_anywhere_is_held_by_every_host(hosts: Hosts) -> None:
    a, b = hosts(2)
    token = a.create_key(project="acme")
    key_id = token.split("-")[1]
    assert _send(b, token) == 200
    store = a.store()
    try:
        store.update_key(key_id, {"rpm": 1})
    finally:
        store.close()
    # b heard of the change: the key now has one request a minute, held in Redis for both hosts.
    _until(lambda: _send(b, token) == 429)
    assert _send(a, token) == 429


def test_three_hosts_hold_one_limit_exactly_and_each_request_leaves_one_row(hosts: Hosts) -> None:
    processes = [*hosts(2), *hosts(1, BUZZ_WORKERS="2")]  # the third with two workers of its own
    store = processes[0].store()
    try:
        new = generate_key()
        store.save_project("acme", {"rpm": 5}, create=True)
        store.create_key(new.key_id, "acme", None, new.secret_hash)
    finally:
        store.close()
    statuses = [_send(processes[i % 3], new.token) for i in range(12)]
    assert statuses.count(200) == 5 and statuses.count(429) == 7
    rows = processes[0].ledger(count=12, where=lambda row: row["key_id"] == new.key_id)
    assert sorted(row["status"] for row in rows) == sorted(statuses)
    assert len({row["id"] for row in rows}) == 12


def test_a_console_token_revoked_on_one_host_is_refused_by_the_others(hosts: Hosts) -> None:
    a, b = hosts(2, BUZZ_ADMIN_TOKEN="admin-secret-for-tests")
    store = a.store()
    try:
        store.save_project("acme", {}, create=True)
        made = console_tokens.generate()
        store.create_console_token(made.token_id, "acme", "alice", made.secret_hash)
        member = Client(a.url)
        assert member.sign_in(made.token).status == 303
        at_b = Client(b.url, cookies=member.cookies)  # the same browser, sent to the other host
        assert at_b.get("/console/keys").status == 200
        assert store.revoke_console_token(made.token_id)
    finally:
        store.close()
    _until(lambda: at_b.get("/console/keys").status != 200)
    assert Client(a.url, cookies=member.cookies).get("/console/keys").status != 200
