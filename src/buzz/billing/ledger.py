"""The ledger row, and the writer that takes rows off the request path in batches."""

from __future__ import annotations

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
    """Everything buzz keeps about one request (DESIGN.md section 5), and nothing more."""

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


_STOP = object()
_ATTEMPTS = 5


class LedgerWriter:
    """Collects rows from the event loop and writes them from one thread, in batches.

    The request path only appends to a queue; the writer thread sleeps until a row arrives,
    then gathers what else arrives within `flush_interval` and writes it in one transaction.
    `close()` drains everything, so a graceful shutdown (SIGTERM) loses no row.
    """

    def __init__(
        self,
        write: Callable[[Sequence[LedgerRow]], None],
        flush_interval: float = 0.05,
        max_batch: int = 1000,
    ) -> None:
        self._write = write
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="buzz-ledger", daemon=True)
        self._written = 0
        self._failed = 0

    @property
    def written(self) -> int:
        return self._written

    def start(self) -> None:
        self._thread.start()

    def submit(self, row: LedgerRow) -> None:
        self._queue.put(row)

    def close(self, timeout: float | None = None) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[LedgerRow] = [first]  # type: ignore[list-item]
            # A row waits at most one interval after the first row of its batch.
            deadline = time.monotonic() + self._flush_interval
            try:
                while len(batch) < self._max_batch:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)  # type: ignore[arg-type]
            except queue.Empty:
                pass
            self._flush(batch)
        # Anything submitted after the stop marker (requests that finished during shutdown).
        rest: list[LedgerRow] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                rest.append(item)  # type: ignore[arg-type]
        if rest:
            self._flush(rest)

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
