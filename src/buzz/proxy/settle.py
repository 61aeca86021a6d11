"""settle: usage -> cost -> one ledger row. Runs for every request, whatever happened to it."""

from __future__ import annotations

import logging
import time

from buzz.billing.ledger import LedgerRow, LedgerWriter
from buzz.billing.pricing import PriceBook
from buzz.billing.usage import Usage
from buzz.errors import where
from buzz.proxy.exchange import Exchange

log = logging.getLogger("buzz.settle")


class Settler:
    def __init__(self, prices: PriceBook, ledger: LedgerWriter) -> None:
        self._prices = prices
        self._ledger = ledger

    def settle(self, x: Exchange) -> LedgerRow:
        meter = x.meter if x.metered else None
        if meter is not None:
            usage = meter.usage if meter.usage is not None else Usage()
            source = meter.source
            error_type = x.error_type or meter.error_type
            note = meter.usage_note
        else:
            usage, source, error_type, note = Usage(), "none", x.error_type, None
        cost_nanos: int | None = 0
        list_nanos: int | None = 0
        version = None
        if x.unpriced and 200 <= x.status < 300:
            cost_nanos = list_nanos = None  # unknown, never a silent $0
        if x.provider is not None and x.model is not None and not usage.is_empty():
            # Bill the model that was asked for: that is the id the customer chose and sees.
            try:
                cost_nanos, list_nanos, version = self._prices.cost(x.provider, x.model, usage, x.ts)
            except Exception as exc:
                # The row is still written, with the usage and an unknown cost: never a silent $0.
                cost_nanos = list_nanos = None
                log.error("pricing failed: %s at %s", type(exc).__name__, where(exc))
        principal = x.principal
        started = x.started
        # Positional, in LedgerRow's field order: keywords cost three times as much to pass, and
        # this runs for every request.
        row = LedgerRow(
            x.request_id,  # id
            x.ts,  # ts
            x.surface,  # surface
            x.status,  # status
            source,  # usage_source
            (time.perf_counter() - started) * 1000.0,  # latency_ms
            principal.key_id if principal else None,  # key_id
            principal.project if principal else None,  # project
            x.user_id,  # user_id
            x.tags,  # tags
            x.provider,  # provider
            x.model,  # model
            error_type,  # error_type
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_write_5m_tokens,
            usage.cache_write_1h_tokens,
            usage.cache_read_tokens,
            cost_nanos,
            list_nanos,  # list_cost_nanos
            version,  # price_version
            None if x.first_byte_at is None else (x.first_byte_at - started) * 1000.0,  # ttfb_ms
            x.upstream_request_id,
            note,  # usage_note
            x.credential,  # credential
        )
        self._ledger.submit(row)
        return row
