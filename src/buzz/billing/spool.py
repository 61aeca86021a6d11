"""Ledger rows on local disk until the store has committed them.

The ledger writer appends every batch here before it writes it to the store, and empties the file
once the store has committed everything in it. So:
- a database that is down costs no row and no memory: batches pile up in the file (one JSON line
  per row), and are written, oldest first, when it returns;
- a process killed outright (SIGKILL, a crash) leaves its file behind, and the next buzz process
  on this data directory writes it. Only the rows not yet handed to the writer are lost: those
  settled in the last flush interval;
- a batch is never counted twice: the store ignores a row it already holds (same id and time), so
  writing a file again after a failure that came after the commit changes nothing.

Each writer has a file of its own, `ledger-<pid>-<random>.jsonl`, held under an exclusive lock
(flock) for as long as the process lives. A file nobody holds was left by a dead process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import msgspec

from buzz.billing.ledger import LedgerRow

log = logging.getLogger("buzz.ledger")
_PATTERN = "ledger-*.jsonl"


class Spool:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        name = f"ledger-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        # Made under a name no one looks for, locked, then renamed: another process looking for
        # files left behind can never find it unlocked.
        hidden = folder / f".{name}"
        self._fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = folder / name
        os.rename(hidden, self.path)
        self._rows = 0  # in the file, not yet committed by the store
        self._encoder = msgspec.json.Encoder()

    @property
    def rows(self) -> int:
        return self._rows

    def append(self, batch: list[LedgerRow]) -> None:
        lines = bytearray()
        for row in batch:
            self._encoder.encode_into(row, lines, len(lines))
            lines += b"\n"
        view = memoryview(lines)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._rows += len(batch)

    def batches(self, size: int) -> Iterator[list[LedgerRow]]:
        """What the file holds, oldest first, `size` rows at a time."""
        return read_batches(self.path, size)

    def clear(self) -> None:
        """Everything in the file is committed: empty it (appends go on at its new end)."""
        os.ftruncate(self._fd, 0)
        self._rows = 0

    def close(self) -> None:
        """Remove the file if the store has every row; else leave it for the next start."""
        if self._rows == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            log.error(
                "ledger: %d rows not yet in the store are kept in %s; the next buzz on this data directory writes them",
                self._rows,
                self.path,
            )
        os.close(self._fd)


def read_batches(path: Path, size: int) -> Iterator[list[LedgerRow]]:
    decoder = msgspec.json.Decoder(LedgerRow)
    batch: list[LedgerRow] = []
    with path.open("rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                break  # a line cut by a crash mid-write: its row never reached the writer's caller
            batch.append(decoder.decode(line))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def left_behind(folder: Path) -> Iterator[list[tuple[Path, int]]]:
    """The files of processes that died, each locked for the caller while it writes them: (path,
    open descriptor). Files another live process holds are not among them."""
    found: list[tuple[Path, int]] = []
    try:
        for path in sorted(folder.glob(_PATTERN)):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if not path.exists():  # written and removed by another process just before
                os.close(fd)
                continue
            found.append((path, fd))
        yield found
    finally:
        for _, fd in found:
            os.close(fd)
