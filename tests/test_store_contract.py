"""The `Store` contract, run against each backend: what the app, the admin API, the console and the
CLI count on, whichever database holds it. (The rollups and the export have their own suites,
run on both backends too: test_rollups.py and test_export.py.)"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from buzz.billing.ledger import LedgerRow
from buzz.limits.base import Limits
from buzz.store.base import BatchRecord, Filters, Store
from stores import BACKENDS, Postgres, open_backend

Opener = Callable[[], Store]


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path, postgres: Postgres) -> Iterator[Opener]:
    """Opens stores on one fresh database: each call is another process's view of it."""
    url = postgres.new_url() if request.param == "postgres" else None
    opened: list[Store] = []

    def open_one() -> Store:
        if url is None:
            store = open_backend("sqlite", tmp_path, postgres)
        else:
            from buzz.store.postgres import PostgresStore

            store = PostgresStore(url)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def _row(i: int, ts: float, **fields: object) -> LedgerRow:
    values: dict[str, object] = {"project": "acme", "key_id": "k1", "model": "m", "cost_nanos": 100, "input_tokens": 7}
    values.update(fields)
    return LedgerRow(f"req_{i:05d}", ts, "anthropic", 200, "reported", 1.5, **values)  # type: ignore[arg-type]


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Until `condition` holds; the timeout only bounds a failing run."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_keys_are_created_found_listed_changed_and_revoked(opener: Opener) -> None:
    store = opener()
    limits = Limits(rpm=60, daily_nanos=5_000_000_000)
    made = store.create_key(
        "k1", "acme", "ci", b"h" * 32, limits, expires_at=1_900_000_000, allowed_models=["claude-*"]
    )
    assert (made.id, made.project, made.name, made.secret_hash, made.limits) == ("k1", "acme", "ci", b"h" * 32, limits)
    assert made.expires_at == 1_900_000_000 and made.allowed_models == ("claude-*",) and made.active
    store.create_key("k2", "globex", None, b"g" * 32)
    assert asyncio.run(store.find_key("k1")) == made
    assert asyncio.run(store.find_key("nope")) is None
    assert [k.id for k in store.list_keys()] == ["k1", "k2"]
    assert [k.id for k in store.list_keys("globex")] == ["k2"]
    changed = store.update_key("k1", {"rpm": None, "allowed_models": ["gpt-4o", "o*"], "name": "renamed"})
    assert changed is not None
    assert changed.limits == Limits(daily_nanos=5_000_000_000)
    assert (changed.allowed_models, changed.name) == (("gpt-4o", "o*"), "renamed")
    cleared = store.update_key("k1", {"allowed_models": None, "expires_unix": None})
    assert cleared is not None and cleared.allowed_models is None and cleared.expires_at is None
    assert store.update_key("nope", {"rpm": 1}) is None
    with pytest.raises(ValueError, match="cannot change secret_hash"):
        store.update_key("k1", {"secret_hash": b"x"})
    assert store.revoke_key("k1") is True
    assert store.revoke_key("k1") is False  # already revoked
    revoked = asyncio.run(store.find_key("k1"))
    assert revoked is not None and not revoked.active and revoked.revoked_at is not None
    # A key's project exists from its first key on.
    assert [p.name for p in store.list_projects()] == ["acme", "globex"]


def test_projects_are_created_once_and_changed(opener: Opener) -> None:
    store = opener()
    made = store.save_project("acme", {"rpm": 10, "prepaid": 1}, create=True)
    assert (made.limits, made.prepaid, made.balance_nanos) == (Limits(rpm=10), True, 0)
    with pytest.raises(ValueError, match="already exists"):
        store.save_project("acme", {}, create=True)
    with pytest.raises(ValueError, match="no project"):
        store.save_project("nope", {"rpm": 1}, create=False)
    with pytest.raises(ValueError, match="cannot change balance_nanos"):
        store.save_project("acme", {"balance_nanos": 5}, create=False)
    changed = store.save_project("acme", {"rpm": None, "monthly_nanos": 9}, create=False)
    assert changed.limits == Limits(monthly_nanos=9)
    assert store.project("acme") == changed
    assert asyncio.run(store.find_project("acme")) == changed
    assert store.project("nope") is None


def test_balances_move_by_top_ups_and_by_the_ledger_writer(opener: Opener) -> None:
    store = opener()
    store.save_project("acme", {"prepaid": 1}, create=True)
    assert store.add_balance("acme", 1_000) == 1_000
    with pytest.raises(ValueError, match="no project"):
        store.add_balance("nope", 1)
    balances = store.balances()
    balances.add("acme", -300)  # a request's charge, not yet written
    assert balances.get("acme") == 700
    assert opener().project("acme").balance_nanos == 1_000  # type: ignore[union-attr]
    store.write_ledger([_row(1, time.time())])  # written with the batch
    assert balances.get("acme") == 700
    assert opener().project("acme").balance_nanos == 700  # type: ignore[union-attr]


def test_console_tokens_and_the_session_secret(opener: Opener) -> None:
    store = opener()
    with pytest.raises(ValueError, match="no project"):
        store.create_console_token("t1", "acme", None, b"s" * 32)
    store.save_project("acme", {}, create=True)
    made = store.create_console_token("t1", "acme", "alice", b"s" * 32)
    assert (made.id, made.project, made.name, made.secret_hash, made.revoked_at) == (
        "t1",
        "acme",
        "alice",
        b"s" * 32,
        None,
    )
    assert store.find_console_token("t1") == made
    assert store.find_console_token("t2") is None
    assert store.list_console_tokens("acme") == [made] and store.list_console_tokens("other") == []
    assert store.revoke_console_token("t1") is True and store.revoke_console_token("t1") is False
    assert store.find_console_token("t1").revoked_at is not None  # type: ignore[union-attr]
    first = store.console_secret(b"a" * 32)
    assert first == b"a" * 32
    assert opener().console_secret(b"b" * 32) == first  # every process agrees on the first


def test_batches_are_recorded_once_and_each_result_is_claimed_once(opener: Opener) -> None:
    first, second = opener(), opener()
    batch = BatchRecord("msgbatch_01", "anthropic", "k1", "acme", "u-7", ("team:ml", "env:prod"), 1765000000.5)

    async def scenario() -> None:
        await first.record_batch(batch)
        await first.record_batch(BatchRecord("msgbatch_01", "anthropic", "k2", "other", None, (), 1.0))  # ignored
        assert await second.find_batch("msgbatch_01") == batch
        assert await second.find_batch("msgbatch_02") is None

        await first.record_batch_file("file-out", "msgbatch_01")
        await first.record_batch_file("file-out", "msgbatch_other")  # ignored
        assert await second.batch_of_file("file-out") == "msgbatch_01"
        assert await second.batch_of_file("file-in") is None

        assert await first.claim_batch_results("msgbatch_01", ["a", "b", "a"]) == ["a", "b"]
        assert await second.claim_batch_results("msgbatch_01", ["b", "c", "d"]) == ["c", "d"]
        assert await first.claim_batch_results("msgbatch_01", ["a", "b", "c", "d"]) == []
        assert await first.claim_batch_results("msgbatch_02", ["a"]) == ["a"]  # ids are a batch's own
        many = [f"req-{i}" for i in range(1200)]  # more than one statement's worth
        assert await first.claim_batch_results("msgbatch_03", many[:700]) == many[:700]
        assert await second.claim_batch_results("msgbatch_03", many) == many[700:]

    asyncio.run(scenario())

    # Two processes claiming the same results at once: each result goes to exactly one.
    ids = [f"x-{i}" for i in range(400)]
    won: list[list[str]] = [[], []]

    async def claims(store: Store, slot: int) -> None:
        for start in range(0, len(ids), 40):
            won[slot] += await store.claim_batch_results("msgbatch_04", ids[start : start + 80])

    stores = (opener(), opener())
    threads = [threading.Thread(target=asyncio.run, args=(claims(store, slot),)) for slot, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won[0] + won[1]) == sorted(ids)


def test_a_replayed_batch_counts_once(opener: Opener) -> None:
    store = opener()
    now = time.time()
    rows = [_row(i, now - i, tags=("feature=x",), user_id="u1") for i in [*range(50), 99]]
    store.write_ledger(rows)
    store.write_ledger(rows[10:30])  # a batch written again after a failure that came too late
    store.write_ledger(rows[40:])
    assert sorted(r["id"] for r in store.ledger_rows()) == sorted(f"req_{i:05d}" for i in [*range(50), 99])
    since, until = int(now) // 900 * 900 - 86400, int(now) // 900 * 900 + 900
    for filters, by in ((Filters(), None), (Filters(), "user"), (Filters(), "tag"), (Filters(key_id="k1"), "model")):
        lines = store.rollup(since, until, filters, by)  # type: ignore[arg-type]
        (line,) = lines
        assert (line.totals.requests, line.totals.cost_nanos, line.totals.input_tokens) == (51, 5100, 357)
    assert store.last_used(None) == {"k1": pytest.approx(now, abs=0.001)}
    assert store.spend_now() == [("key", "k1", 5100, 5100), ("project", "acme", 5100, 5100)] or (
        datetime.fromtimestamp(now - 50, UTC).date() != datetime.fromtimestamp(now, UTC).date()
    )


def test_a_change_by_another_process_moves_the_keys_version(opener: Opener) -> None:
    gateway, operator = opener(), opener()
    for change in (
        lambda: operator.create_key("k1", "acme", None, b"h" * 32),
        lambda: operator.update_key("k1", {"rpm": 5}),
        lambda: operator.save_project("acme", {"daily_nanos": 10}, create=False),
        lambda: operator.add_balance("acme", 10),
        lambda: operator.revoke_key("k1"),
    ):
        seen = gateway.keys_version()
        change()
        _wait_for(lambda seen=seen: gateway.keys_version() != seen)  # type: ignore[misc]


def test_several_processes_starting_at_once_migrate_once(opener: Opener) -> None:
    stores: list[Store] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def open_at_once() -> None:
        start.wait()
        try:
            stores.append(opener())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_at_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(stores) == 4
    stores[0].create_key("k1", "acme", None, b"h" * 32)
    assert all(asyncio.run(store.find_key("k1")) is not None for store in stores)


def test_retention_removes_old_rows_and_keeps_their_sums(opener: Opener) -> None:
    store = opener()
    march = datetime(2026, 3, 20, tzinfo=UTC).timestamp()
    may = datetime(2026, 5, 10, tzinfo=UTC).timestamp()
    store.write_ledger([_row(i, march + i * 3600) for i in range(30)] + [_row(100 + i, may + i) for i in range(5)])
    cutoff = datetime(2026, 5, 10, 0, 0, 3, tzinfo=UTC).timestamp()
    removed = 0
    while count := store.prune_ledger(cutoff, 7):
        removed += count
    assert removed == 33
    assert [r["id"] for r in store.ledger_rows()] == ["req_00103", "req_00104"]
    (line,) = store.rollup(int(march) - 86400, int(may) + 86400, Filters(), None)
    assert line.totals.requests == 35  # the sums outlive the rows
