"""Ledger rows on local disk until the store has committed them.

The event loop appends every batch of rows here when it hands the batch over (each
`ledger.flush_interval`, 10 ms by default), and the writer thread writes the store from these
files, removing each once the store has committed all of it. So:
- a database that is down costs no row and no memory: batches pile up in files (one JSON line
  per row), and are written, oldest first, when it returns;
- a process killed outright (SIGKILL, a crash) leaves its files behind, and the next buzz process
  on this data directory writes them. Only rows not yet handed over are lost: those settled in
  the last flush interval. The rows are in the kernel's page cache once written, which a killed
  process cannot take with it (a power cut can: the files are not synced, which would cost a
  disk flush per batch);
- a row is never counted twice: the store ignores a row it already holds (same id and time), so
  writing a file again after a failure that came after the commit changes nothing.

Rows go to the current segment, `ledger-<pid>-<random>.jsonl`. The writer seals it (appends go
to a new one from then on), writes what it holds, and removes it. Every segment is held under an
exclusive lock (flock) while its process lives; a file nobody holds was left by a dead process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec

from buzz.billing.ledger import LedgerRow

log = logging.getLogger("buzz.ledger")
_PATTERN = "ledger-*.jsonl"


class Segment:
    """One spool file, locked for as long as this process holds it."""

    def __init__(self, folder: Path) -> None:
        name = f"ledger-{os.getpid()}-{secrets.token_hex(6)}.jsonl"
        # Made under a name no one looks for, locked, then renamed: another process looking for
        # files left behind can never find it unlocked.
        hidden = folder / f".{name}"
        self.fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = folder / name
        os.rename(hidden, self.path)
        self.rows = 0
        # The rows as appended, so that the writer need not read the file back; let go of once a
        # write failed (the file has them), so that an outage never holds them in memory.
        self.kept: list[LedgerRow] | None = []
        self.observed = False  # the writer's observer has seen its rows (it is sealed)

    def batches(self, size: int, decoder: msgspec.json.Decoder[LedgerRow]) -> Iterator[list[LedgerRow]]:
        if self.kept is not None:
            return iter([self.kept])
        return read_batches(self.path, size, decoder)

    def reset(self) -> None:
        """Empty, for reuse: its rows are committed."""
        os.ftruncate(self.fd, 0)
        self.rows = 0
        self.kept = []
        self.observed = False

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)

    def release(self) -> None:
        """Let go of the file, left for the next buzz process on this data directory."""
        os.close(self.fd)


class Spool:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._lock = threading.Lock()  # `append` runs on the event loop, `seal` in the writer thread
        self._current = Segment(folder)
        self._sealed: list[Segment] = []
        self._spare: Segment | None = None  # a written segment, emptied, for the next seal
        self._encoder = msgspec.json.Encoder()
        self.decoder = msgspec.json.Decoder(LedgerRow)

    @property
    def rows(self) -> int:
        """Rows in the spool: handed over, not yet committed by the store."""
        with self._lock:
            return self._current.rows + sum(segment.rows for segment in self._sealed)

    def append(self, batch: list[LedgerRow]) -> None:
        lines = bytearray()
        for row in batch:
            self._encoder.encode_into(row, lines, len(lines))
            lines += b"\n"
        with self._lock:
            view = memoryview(lines)
            while view:
                written = os.write(self._current.fd, view)
                view = view[written:]
            self._current.rows += len(batch)
            if self._current.kept is not None:
                self._current.kept.extend(batch)

    def seal(self) -> list[Segment]:
        """For the writer: every segment with rows, oldest first; appends go to a new one."""
        with self._lock:
            empty = self._current.rows == 0
        if not empty:
            # The spare, or a new file made outside the lock: appends never wait on a file's creation.
            fresh, self._spare = self._spare or Segment(self.folder), None
            with self._lock:
                self._sealed.append(self._current)
                self._current = fresh
        with self._lock:
            return list(self._sealed)

    def written(self, segment: Segment) -> None:
        """The store has every row of `segment`: emptied, it becomes the spare."""
        with self._lock:
            self._sealed.remove(segment)
        if self._spare is None:
            segment.reset()
            self._spare = segment
        else:
            segment.remove()

    def failed(self) -> None:
        """A write failed: the sealed segments' rows are read back from their files from now on."""
        with self._lock:
            for segment in self._sealed:
                segment.kept = None

    def close(self) -> None:
        """Remove what the store has; leave the rest, loudly, for the next start."""
        self.seal()
        self._current.remove()
        if self._spare is not None:
            self._spare.remove()
        for segment in self._sealed:
            log.error(
                "ledger: %d rows not yet in the store are kept in %s; the next buzz on this data directory writes them",
                segment.rows,
                segment.path,
            )
            segment.release()


def read_batches(path: Path, size: int, decoder: msgspec.json.Decoder[LedgerRow]) -> Iterator[list[LedgerRow]]:
    batch: list[LedgerRow] = []
    with path.open("rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                break  # a line cut by a crash mid-write: its row had not been handed over
            batch.append(decoder.decode(line))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def left_behind(folder: Path) -> Iterator[list[Path]]:
    """The files of processes that died, each locked for the caller while it writes them. Files
    another live process holds are not among them."""
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
        yield [path for path, _ in found]
    finally:
        for _, fd in found:
            os.close(fd)
