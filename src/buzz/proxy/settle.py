"""settle: usage -> cost -> one ledger row. Runs for every request, whatever happened to it."""

from __future__ import annotations

from datetime import UTC, datetime

from buzz.billing.ledger import LedgerRow, LedgerWriter
from buzz.billing.pricing import PriceBook
from buzz.billing.usage import Usage
from buzz.proxy.exchange import Exchange


class Settler:
    def __init__(self, prices: PriceBook, ledger: LedgerWriter) -> None:
        self._prices = prices
        self._ledger = ledger

    def settle(self, x: Exchange) -> LedgerRow:
        meter = x.meter
        usage = meter.usage if meter is not None and meter.usage is not None else Usage()
        source = meter.source if meter is not None else "none"
        error_type = x.error_type or (meter.error_type if meter is not None else None)
        cost_nanos: int | None = 0
        list_nanos: int | None = 0
        version = None
        if not usage.is_empty() and x.provider is not None and x.model is not None:
            # Bill the model that was asked for: that is the id the customer chose and sees.
            cost = self._prices.cost(x.provider, x.model, usage, datetime.fromtimestamp(x.ts, UTC))
            cost_nanos, list_nanos, version = cost.buzz_nanos, cost.list_nanos, cost.price_version
        principal = x.principal
        row = LedgerRow(
            id=x.request_id,
            ts=x.ts,
            surface=x.surface,
            status=x.status,
            usage_source=source,
            latency_ms=x.elapsed_ms(),
            key_id=principal.key_id if principal else None,
            project=principal.project if principal else None,
            user_id=x.user_id,
            tags=x.tags,
            provider=x.provider,
            model=x.model,
            error_type=error_type,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_write_5m_tokens=usage.cache_write_5m_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cost_nanos=cost_nanos,
            list_cost_nanos=list_nanos,
            price_version=version,
            ttfb_ms=None if x.first_byte_at is None else x.elapsed_ms(x.first_byte_at),
            upstream_request_id=x.upstream_request_id,
        )
        self._ledger.submit(row)
        return row
