"""The ledger's spool on a real file system: rows wait in files while the store fails, are written
once and in order when it answers, and the files a dead process left are written at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from buzz.billing.ledger import LedgerRow, LedgerWriter
from buzz.billing.spool import Spool, left_behind, read_batches
from support import wait_until


def _row(i: int) -> LedgerRow:
    return LedgerRow(f"req_{i:05d}", 1_790_000_000 + i, "anthropic", 200, "reported", 1.5, key_id="k", tags=("a=b",))


class Store:
    """A write function that fails while `down` is set, and records what it was given."""

    def __init__(self) -> None:
        self.rows: list[LedgerRow] = []
        self.down = threading.Event()
        self.calls = 0

    def write(self, rows: Sequence[LedgerRow]) -> None:
        self.calls += 1
        if self.down.is_set():
            raise ConnectionError("the store is away")
        self.rows.extend(rows)


def test_rows_wait_in_files_while_the_store_fails_and_are_written_once_in_order(tmp_path: Path) -> None:
    store = Store()
    spool = Spool(tmp_path / "spool")
    writer = LedgerWriter(store.write, spool, flush_interval=0.001)
    writer.start()
    store.down.set()
    for i in range(300):
        writer.submit(_row(i))
    assert wait_until(lambda: store.calls >= 2, timeout=10)  # it tried, and tried again
    assert store.rows == []
    assert spool.rows == 300
    on_disk = sum(path.read_bytes().count(b"\n") for path in (tmp_path / "spool").glob("ledger-*.jsonl"))
    assert on_disk == 300
    store.down.clear()
    assert wait_until(lambda: spool.rows == 0, timeout=10)
    writer.close()
    assert [row.id for row in store.rows] == [f"req_{i:05d}" for i in range(300)]
    assert store.rows[7] == _row(7)  # every field, back from the file
    assert list((tmp_path / "spool").iterdir()) == []  # a clean stop leaves nothing


def test_a_stop_with_the_store_away_leaves_the_rows_for_the_next_start(tmp_path: Path) -> None:
    store = Store()
    store.down.set()
    writer = LedgerWriter(store.write, Spool(tmp_path / "spool"), flush_interval=0.001)
    writer.start()
    for i in range(50):
        writer.submit(_row(i))
    writer.close()
    assert store.rows == []
    left = list((tmp_path / "spool").glob("ledger-*.jsonl"))
    assert sum(path.read_bytes().count(b"\n") for path in left) == 50
    store.down.clear()
    again = LedgerWriter(store.write, Spool(tmp_path / "spool"), flush_interval=0.001)
    again.start()
    assert wait_until(lambda: len(store.rows) == 50, timeout=10)
    again.close()
    assert sorted(row.id for row in store.rows) == [f"req_{i:05d}" for i in range(50)]
    assert list((tmp_path / "spool").glob("ledger-*.jsonl")) == []


def test_the_files_of_a_killed_process_are_written_and_a_live_ones_are_not_touched(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    script = (
        "import sys, os, signal\n"
        "from buzz.billing.spool import Spool\n"
        "from test_spool import _row\n"
        "spool = Spool(__import__('pathlib').Path(sys.argv[1]))\n"
        "spool.append([_row(i) for i in range(20)])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    killed = subprocess.run([sys.executable, "-c", script, str(folder)], env=env, timeout=60, check=False)
    assert killed.returncode == -signal.SIGKILL
    live = Spool(folder)  # another process's spool, alive: its file is locked
    live.append([_row(100)])
    with left_behind(folder) as found:
        assert len(found) == 1
        assert [row.id for batch in read_batches(found[0], 7, live.decoder) for row in batch] == [
            f"req_{i:05d}" for i in range(20)
        ]
    store = Store()
    writer = LedgerWriter(store.write, Spool(folder), flush_interval=0.001)
    writer.start()
    assert wait_until(lambda: len(store.rows) == 20, timeout=10)
    writer.close()
    assert live.rows == 1 and len(list(folder.glob("ledger-*.jsonl"))) == 1  # the live one's only
    live.close()


def test_a_line_cut_by_a_crash_is_left_out(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([_row(1), _row(2)])
    with spool.seal()[0].path.open("ab") as cut:
        cut.write(b'{"id":"req_00003","ts":17')  # the process died mid-write
    rows = [row.id for batch in read_batches(spool.seal()[0].path, 10, spool.decoder) for row in batch]
    assert rows == ["req_00001", "req_00002"]
