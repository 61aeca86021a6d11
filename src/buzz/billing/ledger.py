"""The ledger row, and the writer that takes rows off the request path in batches."""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buzz.billing.usage import UsageSource

if TYPE_CHECKING:
    from buzz.billing.spool import Spool

log = logging.getLogger("buzz.ledger")


@dataclass(slots=True)
class LedgerRow:
    """Everything buzz keeps about one request, and nothing more."""

    id: str
    ts: float  # unix seconds at arrival
    surface: str
    status: int
    usage_source: UsageSource
    latency_ms: float
    key_id: str | None = None
    project: str | None = None
    user_id: str | None = None
    tags: tuple[str, ...] = ()
    provider: str | None = None
    model: str | None = None
    error_type: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    cost_nanos: int | None = None
    list_cost_nanos: int | None = None
    price_version: str | None = None
    ttfb_ms: float | None = None
    upstream_request_id: str | None = None
    usage_note: str | None = None  # why the meter left part of the answer unread (a fixed string)


_ATTEMPTS = 5  # without a spool: tries of one batch before it is given up
_BACKOFF_CAP = 2.0  # seconds between tries while the store is down: its return is noticed this soon
_REPLAY_BATCH = 5000  # rows per transaction when writing a spool file


class LedgerWriter:
    """Collects rows on the event loop and writes them from one thread, in batches.

    `submit` only appends to a list; a timer hands the list to the writer thread once per
    `flush_interval`, so the thread wakes once per batch, not once per request (a wake-up per
    row costs the event loop measurable time under load). `close()` hands over what is left and
    waits for the thread, so a graceful shutdown (SIGTERM) loses no row.

    With a spool (`buzz.billing.spool`), the thread appends each batch to a local file before it
    writes it, and empties the file once the store has it all. While the store is down, batches
    go on landing in the file, not in memory, and the thread tries the store again at most every
    `_BACKOFF_CAP` seconds; once it answers, the file is written, oldest row first. The files of
    processes that died are written at start, and whenever the store comes back.
    """

    def __init__(
        self,
        write: Callable[[Sequence[LedgerRow]], None],
        flush_interval: float = 0.01,
        spool: Spool | None = None,
        clock: Callable[[], float] = time.monotonic,
        write_every: float = 0.0,
    ) -> None:
        self._write = write
        # With a spool, the least time between two writes to the store: a networked store pays a
        # fixed cost per transaction (its round trips, and summing a batch into the rollups), so
        # batches are merged until it is due. The rows wait in the spool, so none is at risk.
        self._write_every = write_every
        self._written_at = -math.inf
        self._flush_interval = flush_interval
        self._spool = spool
        self._clock = clock
        self._pending: list[LedgerRow] = []
        self._timer: asyncio.TimerHandle | None = None
        self._queue: queue.SimpleQueue[list[LedgerRow] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="buzz-ledger", daemon=True)
        self._written = 0
        self._failed = 0
        self._next_try = 0.0  # while the store is down: when to try it again
        self._pause = 0.0
        self._orphans_checked = False

    @property
    def written(self) -> int:
        return self._written

    @property
    def backlog(self) -> int:
        """Rows in the spool that the store does not have yet."""
        return self._spool.rows if self._spool is not None else 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, row: LedgerRow) -> None:
        self._pending.append(row)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the event loop: hand over at once
                self._handoff()
                return
            self._timer = loop.call_later(self._flush_interval, self._handoff)

    def _handoff(self) -> None:
        self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            self._queue.put(batch)

    def close(self, timeout: float | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._handoff()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        if self._spool is None:
            self._loop_unspooled()
            # A last write even with no rows: it carries changes kept beside the rows (balances).
            self._flush([])
            return
        try:
            self._loop_spooled(self._spool)
        finally:
            self._spool.close()

    # --- with a spool ---------------------------------------------------------------------

    def _loop_spooled(self, spool: Spool) -> None:
        stopping = False
        # Rows spooled since the last write, kept while they are all the spool holds (the file is
        # read back only after a failed write).
        unwritten: list[LedgerRow] = []
        while not stopping:
            # Behind: rows in the spool, or files dead processes left that are not written yet
            # (looked for at once at start): the store is tried when the pause is over.
            due = max(self._next_try, self._written_at + self._write_every)
            behind = spool.rows or not self._orphans_checked
            wait = max(0.0, due - self._clock()) if behind else None
            try:
                batch = self._queue.get(timeout=wait)
            except queue.Empty:
                batch = []  # time to write
            if batch is None:
                batch, stopping = [], True
            stopping |= self._drain_into(batch)
            if batch:
                try:
                    spool.append(batch)
                except OSError as exc:  # a full or failing disk: the store directly, as without a spool
                    log.error("ledger: spool append failed (%s); writing straight to the store", type(exc).__name__)
                    self._flush(batch)
                    continue
                unwritten.extend(batch)
            if self._clock() >= due or stopping:
                self._catch_up(spool, unwritten, final=stopping)
                unwritten = []  # written, or in the file to be read back

    def _drain_into(self, batch: list[LedgerRow]) -> bool:
        """Merge whatever else is already waiting into `batch`; True if `close` was among it."""
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return False
            if more is None:
                return True
            batch.extend(more)

    def _catch_up(self, spool: Spool, rows: list[LedgerRow], final: bool) -> None:
        """Write what the spool holds: `rows` when they are all there is (the usual case, no
        file read), else the whole file."""
        try:
            if spool.rows == len(rows):
                self._write(rows)
            else:
                for chunk in spool.batches(_REPLAY_BATCH):
                    self._write(chunk)
                log.info("ledger: the store is back; %d spooled rows written", spool.rows)
        except Exception as exc:
            # Only the exception's type: its text could quote the parameters of the statement.
            if self._pause == 0.0:
                log.warning("ledger: store write failed (%s); rows are kept in %s", type(exc).__name__, spool.path)
            self._pause = min(_BACKOFF_CAP, max(0.1, self._pause * 2))
            self._orphans_checked = False  # a dead process's file may wait on the store too
            self._next_try = self._clock() + self._pause
            return
        self._written += spool.rows
        self._written_at = self._clock()
        spool.clear()
        self._pause = 0.0
        self._next_try = 0.0
        if not self._orphans_checked and not final:
            self._orphans_checked = self._write_left_behind(spool)

    def _write_left_behind(self, spool: Spool) -> bool:
        """Write the files dead processes left; True once there were none left to write."""
        from buzz.billing.spool import left_behind, read_batches  # a module away from the hot path

        with left_behind(spool.folder) as found:
            for path, _ in found:
                try:
                    count = 0
                    for chunk in read_batches(path, _REPLAY_BATCH):
                        self._write(chunk)
                        count += len(chunk)
                except Exception as exc:
                    log.warning("ledger: could not yet write %s (%s)", path.name, type(exc).__name__)
                    return False
                path.unlink()
                self._written += count
                log.info("ledger: %d rows left by a stopped process written from %s", count, path.name)
        return True

    # --- without one ----------------------------------------------------------------------

    def _loop_unspooled(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._drain_into(batch):
                self._flush(batch)
                return
            self._flush(batch)

    def _flush(self, batch: list[LedgerRow]) -> None:
        # A busy or briefly unavailable database must not cost rows: retry with backoff before
        # giving up (and then say so loudly).
        for attempt in range(_ATTEMPTS):
            try:
                self._write(batch)
            except Exception as exc:
                # Only the exception's type: its text could quote the parameters of the statement.
                log.warning(
                    "ledger write of %d rows failed (%s), attempt %d",
                    len(batch),
                    type(exc).__name__,
                    attempt + 1,
                )
                time.sleep(min(2.0, 0.1 * 2**attempt))
            else:
                self._written += len(batch)
                return
        self._failed += len(batch)
        log.error("ledger lost %d rows after %d attempts", len(batch), _ATTEMPTS)
