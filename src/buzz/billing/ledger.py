"""The ledger row, and the writer that takes rows off the request path in batches."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from buzz.billing.usage import UsageSource

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


_ATTEMPTS = 5


class LedgerWriter:
    """Collects rows on the event loop and writes them from one thread, in batches.

    `submit` only appends to a list; a timer hands the list to the writer thread once per
    `flush_interval`, so the thread wakes once per batch, not once per request (a wake-up per
    row costs the event loop measurable time under load). `close()` hands over what is left and
    waits for the thread, so a graceful shutdown (SIGTERM) loses no row.
    """

    def __init__(self, write: Callable[[Sequence[LedgerRow]], None], flush_interval: float = 0.05) -> None:
        self._write = write
        self._flush_interval = flush_interval
        self._pending: list[LedgerRow] = []
        self._timer: asyncio.TimerHandle | None = None
        self._queue: queue.SimpleQueue[list[LedgerRow] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="buzz-ledger", daemon=True)
        self._written = 0
        self._failed = 0

    @property
    def written(self) -> int:
        return self._written

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
        self._loop()
        # A last write even with no rows: it carries changes kept beside the rows (balances).
        self._flush([])

    def _loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            # Merge whatever else is already waiting into one transaction.
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._flush(batch)
                    return
                batch.extend(more)
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
