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
    credential: str | None = None  # the name (never the key) of the upstream credential it went out with


_ATTEMPTS = 5  # tries of a batch the spool could not take (a failing disk) before it is given up
_BACKOFF_CAP = 2.0  # seconds between tries while the store is down: its return is noticed this soon
_REPLAY_BATCH = 5000  # rows per transaction when writing spool files


class LedgerWriter:
    """Collects rows on the event loop, spools them to disk, and writes them to the store from
    one thread, in batches.

    `submit` only appends to a list. A timer hands the list over once per `flush_interval`: it is
    appended to the spool (`buzz.billing.spool`) there and then, on the event loop, so that a
    killed process loses at most that interval's rows, and the writer thread is told. The
    thread writes what the spool holds to the store, at most once per `write_every` (a networked
    store pays a fixed cost per transaction, so batches are merged until it is due), and empties
    the spool as the store commits. While the store is down, rows pile up in the spool, not in
    memory, and the thread tries the store again at most every `_BACKOFF_CAP` seconds. The files
    of processes that died are written at start, and whenever the store comes back. `close()`
    hands over what is left and waits for the thread, so a graceful shutdown (SIGTERM) loses no
    row: what the store could not take stays in the spool for the next start.

    `observer`, if given, is called from the thread with every batch of rows it takes: a spool
    segment when it is sealed (before its first write, so rows that wait out a store outage are
    seen at once, and a segment written again after a failure is not seen again), or a batch the
    spool could not take. Each row is seen once. Rows a dead process left behind are not: that
    process saw them, if it got as far as sealing them. An observer that raises is logged once
    and never stops the ledger.
    """

    def __init__(
        self,
        write: Callable[[Sequence[LedgerRow]], None],
        spool: Spool,
        flush_interval: float = 0.01,
        write_every: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        observer: Callable[[Sequence[LedgerRow]], None] | None = None,
    ) -> None:
        self._write = write
        self._observer = observer
        self._observer_failed = False
        self._spool = spool
        self._flush_interval = flush_interval
        self._write_every = write_every
        self._clock = clock
        self._pending: list[LedgerRow] = []
        self._timer: asyncio.TimerHandle | None = None
        # What the thread is told: rows were spooled (True), a batch the spool could not take
        # (a list, written straight to the store), or close (None).
        self._queue: queue.SimpleQueue[list[LedgerRow] | bool | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="buzz-ledger", daemon=True)
        self._written = 0
        self._failed = 0
        self._written_at = -math.inf
        self._next_try = 0.0  # while the store is down: when to try it again
        self._pause = 0.0
        self._orphans_checked = False
        self._spool_failing = False

    @property
    def written(self) -> int:
        return self._written

    @property
    def dropped(self) -> int:
        """Rows given up: a batch neither the spool nor, after `_ATTEMPTS` tries, the store took."""
        return self._failed

    @property
    def backlog(self) -> int:
        """Rows not in the store yet: waiting on the event loop, or in the spool."""
        return len(self._pending) + self._spool.rows

    @property
    def spool_failing(self) -> bool:
        """The last batch could not be appended to the spool (a full or failing disk)."""
        return self._spool_failing

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
        if not batch:
            return
        try:
            self._spool.append(batch)
        except OSError as exc:  # a full or failing disk: to the store without the spool's safety
            log.error("ledger: spool append failed (%s); writing straight to the store", type(exc).__name__)
            self._spool_failing = True
            self._queue.put(batch)
            return
        self._spool_failing = False
        self._queue.put(True)

    def close(self, timeout: float | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._handoff()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._spool.close()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            # Behind: rows in the spool, or files dead processes left that are not written yet
            # (looked for at once at start): the store is written when that is due.
            due = max(self._next_try, self._written_at + self._write_every)
            behind = self._spool.rows or not self._orphans_checked
            wait = max(0.0, due - self._clock()) if behind else None
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = False  # time to write
            unspooled: list[LedgerRow] = []
            while True:
                if item is None:
                    stopping = True
                elif isinstance(item, list):
                    unspooled.extend(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if unspooled:
                self._observe(unspooled)
                self._flush(unspooled)
            if stopping or self._clock() >= due:
                self._catch_up(final=stopping)

    def _catch_up(self, final: bool) -> None:
        """Write every sealed segment of the spool to the store, oldest first."""
        try:
            segments = self._spool.seal()
            if self._observer is not None:
                for segment in segments:
                    if not segment.observed:  # sealed just now: a retry must not count it again
                        segment.observed = True
                        for chunk in segment.batches(_REPLAY_BATCH, self._spool.decoder):
                            self._observe(chunk)
            for segment in segments:
                for chunk in segment.batches(_REPLAY_BATCH, self._spool.decoder):
                    self._write(chunk)
                self._written += segment.rows
                self._spool.written(segment)
            if final or not segments:
                # Changes kept beside the rows (SQLite's prepaid balances) ride on a write:
                # one with no rows carries them when there were none.
                self._write([])
        except Exception as exc:
            # Only the exception's type: its text could quote the parameters of the statement.
            if self._pause == 0.0:
                log.warning(
                    "ledger: store write failed (%s); rows are kept in %s", type(exc).__name__, self._spool.folder
                )
            self._spool.failed()
            self._pause = min(_BACKOFF_CAP, max(0.1, self._pause * 2))
            self._next_try = self._clock() + self._pause
            self._orphans_checked = False  # a dead process's file may wait on the store too
            return
        if self._pause:
            log.info("ledger: the store is back; the spool is written")
        self._written_at = self._clock()
        self._pause = 0.0
        self._next_try = 0.0
        if not self._orphans_checked and not final:
            self._orphans_checked = self._write_left_behind()

    def _write_left_behind(self) -> bool:
        """Write the files dead processes left; True once there were none left to write."""
        from buzz.billing.spool import left_behind, read_batches  # a module away from the hot path

        with left_behind(self._spool.folder) as found:
            for path in found:
                try:
                    count = 0
                    for chunk in read_batches(path, _REPLAY_BATCH, self._spool.decoder):
                        self._write(chunk)
                        count += len(chunk)
                except Exception as exc:
                    log.warning("ledger: could not yet write %s (%s)", path.name, type(exc).__name__)
                    return False
                path.unlink()
                self._written += count
                log.info("ledger: %d rows left by a stopped process written from %s", count, path.name)
        return True

    def _observe(self, rows: Sequence[LedgerRow]) -> None:
        observer = self._observer
        if observer is None:
            return
        try:
            observer(rows)
        except Exception as exc:
            if not self._observer_failed:
                self._observer_failed = True
                log.error("ledger: the rows' observer failed (%s); the ledger goes on", type(exc).__name__)

    def _flush(self, batch: list[LedgerRow]) -> None:
        """A batch the spool could not take: written now, retried with backoff, then given up
        (and said so loudly) rather than held without bound."""
        for attempt in range(_ATTEMPTS):
            try:
                self._write(batch)
            except Exception as exc:
                log.warning(
                    "ledger write of %d rows failed (%s), attempt %d", len(batch), type(exc).__name__, attempt + 1
                )
                time.sleep(min(2.0, 0.1 * 2**attempt))
            else:
                self._written += len(batch)
                return
        self._failed += len(batch)
        log.error("ledger lost %d rows after %d attempts", len(batch), _ATTEMPTS)
