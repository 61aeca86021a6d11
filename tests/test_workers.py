"""`buzz serve --workers N`: several processes on one port, with the real Redis for their limits.

Which worker takes a connection is the kernel's choice, so the tests choose for it: a worker
stopped with SIGSTOP accepts nothing, and every connection then goes to the other one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from buzz.proxy.auth import generate_key
from buzz.store.sqlite import SQLiteStore
from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, raw_post, redis_url, wait_until

MODEL = "claude-haiku-4-5-20251001"
BODY = json.dumps({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}).encode()


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)


def _listening(buzz: BuzzProcess) -> int:
    return buzz.output().count(b"buzz listening on")


def _send(buzz: BuzzProcess, token: str) -> int:
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    return raw_post(buzz.url, "/v1/messages", BODY, headers)[0]


@pytest.fixture
def two_workers(tmp_path: Path, fake_session: FakeAnthropic) -> Iterator[tuple[BuzzProcess, str, str]]:
    # In a process group of its own, as a shell runs it, so a test can send Ctrl-C's SIGINT to it.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = SQLiteStore(data_dir / "buzz.sqlite3")
    key = generate_key()
    store.create_key(key.key_id, "acme", "web", key.secret_hash)
    store.close()
    env = {"BUZZ_WORKERS": "2", "BUZZ_REDIS_URL": redis_url(3)}
    buzz = BuzzProcess(data_dir, fake_session.url, env, new_session=True)
    with buzz:
        assert wait_until(lambda: _listening(buzz) == 2, timeout=20)
        yield buzz, key.key_id, key.token


def test_each_worker_serves_and_a_revoked_key_is_refused_by_both(two_workers: tuple[BuzzProcess, str, str]) -> None:
    buzz, key_id, token = two_workers
    assert buzz.process is not None
    workers = _children(buzz.process.pid)
    assert len(workers) == 2
    sent = 0
    for stopped, serving in (workers, workers[::-1]):
        os.kill(stopped, signal.SIGSTOP)  # every connection now goes to the other worker
        try:
            for _ in range(5):
                assert _send(buzz, token) == 200
                sent += 1
        finally:
            os.kill(stopped, signal.SIGCONT)
        assert serving in _children(buzz.process.pid)
    assert len(buzz.ledger(sent)) == sent  # each worker's own writer, one database
    # Revoked from another process: each worker refuses the key from its next request.
    assert buzz.cli("keys", "revoke", key_id).returncode == 0
    for stopped in workers:
        os.kill(stopped, signal.SIGSTOP)
        try:
            assert _send(buzz, token) == 401
        finally:
            os.kill(stopped, signal.SIGCONT)


def test_both_writers_write_at_once_and_lose_nothing(two_workers: tuple[BuzzProcess, str, str]) -> None:
    buzz, _, token = two_workers
    with ThreadPoolExecutor(8) as pool:  # eight clients at once, spread over both workers
        statuses = list(pool.map(lambda _: _send(buzz, token), range(200)))
    assert statuses == [200] * 200
    assert len(buzz.ledger(200)) == 200
    assert buzz.stop() == 0
    assert len(buzz.ledger()) == 200
    assert b"Traceback" not in buzz.output() and b"locked" not in buzz.output()


def test_a_worker_that_dies_is_replaced_and_sigterm_flushes_every_row(
    two_workers: tuple[BuzzProcess, str, str],
) -> None:
    buzz, _, token = two_workers
    assert buzz.process is not None
    first, second = _children(buzz.process.pid)
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: _listening(buzz) == 3, timeout=20)  # a new worker 1
    replaced = _children(buzz.process.pid)
    assert len(replaced) == 2 and first not in replaced and second in replaced
    for _ in range(20):
        assert _send(buzz, token) == 200
    assert buzz.stop() == 0
    assert len(buzz.ledger()) == 20  # both writers flushed before the parent exited
    assert b"exited (status -9): starting another" in buzz.output()


def test_ctrl_c_stops_every_worker_gracefully_once(two_workers: tuple[BuzzProcess, str, str]) -> None:
    buzz, _, token = two_workers
    assert buzz.process is not None
    for _ in range(10):
        assert _send(buzz, token) == 200
    # Ctrl-C in a terminal sends SIGINT to the whole foreground process group. A worker that got
    # it from there and again from the parent would exit at once, without flushing its rows.
    os.killpg(buzz.process.pid, signal.SIGINT)
    assert buzz.process.wait(timeout=20) == 0
    assert len(buzz.ledger()) == 10
    assert buzz.output().count(b"ledger flushed") == 2


def test_workers_stop_and_flush_when_the_parent_is_killed(two_workers: tuple[BuzzProcess, str, str]) -> None:
    buzz, _, token = two_workers
    assert buzz.process is not None
    workers = _children(buzz.process.pid)
    for _ in range(10):
        assert _send(buzz, token) == 200
    buzz.process.kill()  # SIGKILL: the parent cannot forward anything
    buzz.process.wait()
    # The kernel tells each worker (SIGTERM); each stops as it would on its own SIGTERM.
    assert wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=20)
    assert len(buzz.ledger(10)) == 10
    assert buzz.output().count(b"ledger flushed") == 2


def test_several_workers_without_redis_refuse_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZZ_")}
    env["BUZZ_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "buzz", "serve", "--port", "0", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "2 workers need limits.redis_url (BUZZ_REDIS_URL)" in done.stderr
    assert "could make 200" in done.stderr
    assert not (tmp_path / "data" / "buzz.sqlite3").exists()  # nothing started
