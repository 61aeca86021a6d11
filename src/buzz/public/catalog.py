"""`GET /models` and `GET /api/pricing`: what buzz routes and what it charges, for anyone to read.

The figures come from the same PriceBook that bills requests, so the public list and the ledger
cannot disagree.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from buzz import providers
from buzz.billing.pricing import ModelPrice, PriceBook, Rates
from buzz.catalogue import ModelEntry

_RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


def _vendor(provider: str) -> str:
    known = providers.BY_NAME.get(provider)
    return known.display_name if known is not None else provider


def _rates(rates: Rates) -> dict[str, str]:
    return {name: _decimal(getattr(rates, name)) for name in _RATE_FIELDS}


def _decimal(value: Decimal) -> str:
    """Exact, with at least cents: 5 -> "5.00", 0.5 -> "0.50", 0.075 -> "0.075"."""
    whole, _, fraction = format(value.normalize(), "f").partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def _tiers(price: ModelPrice) -> list[dict[str, object]]:
    return [{"above_input_tokens": threshold, **_rates(rates)} for threshold, rates in price.tiers]


def models_document(entries: Sequence[ModelEntry]) -> dict[str, object]:
    return {
        "object": "list",
        "data": [
            {
                "id": entry.id,
                "vendor": entry.provider,
                "family": entry.family or None,
                "display_name": entry.display_name,
                "aliases": list(entry.aliases),
                "context_window": entry.context_window,
                "created_at": entry.created_at,
            }
            for entry in entries
        ],
    }


def pricing_document(entries: Sequence[ModelEntry], prices: PriceBook, discount: Decimal) -> dict[str, Any]:
    now = datetime.now(UTC)
    data = []
    for entry in entries:
        listed = prices.list_price(entry.provider, entry.id, now)
        ours = prices.buzz_price(entry.provider, entry.id, now)
        if ours is None:
            continue  # routable but unpriced: billed as unknown, so not advertised with a price
        data.append(
            {
                "id": entry.id,
                "vendor": entry.provider,
                "priced_as": ours.priced_as,
                "buzz": _rates(ours.base),
                "list": _rates(listed.base) if listed is not None else None,
                "buzz_tiers": _tiers(ours),
                "list_tiers": _tiers(listed) if listed is not None else [],
            }
        )
    return {
        "currency": "USD",
        "unit": "per 1M tokens",
        "discount": _decimal(discount),
        "price_version": prices.version,
        "as_of": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": data,
    }


def models_page(entries: Sequence[ModelEntry], pricing: dict[str, Any]) -> bytes:
    """A plain, self-contained HTML page: no scripts, no external assets."""
    priced = {item["id"]: item for item in pricing["data"]}
    rows = []
    for entry in entries:
        price = priced.get(entry.id)
        buzz = price["buzz"] if price else None
        cells = [
            f"<td><code>{html.escape(entry.id)}</code></td>",
            f"<td>{html.escape(_vendor(entry.provider))}</td>",
            f"<td>{html.escape(entry.display_name)}</td>",
            f"<td>{html.escape(', '.join(entry.aliases))}</td>",
            f"<td class=num>{entry.context_window:,}</td>" if entry.context_window else "<td></td>",
            f"<td class=num>{buzz['input']}</td><td class=num>{buzz['output']}</td>" if buzz else "<td></td><td></td>",
            f"<td class=num>{buzz['cache_write_5m']} / {buzz['cache_write_1h']} / {buzz['cache_read']}</td>"
            if buzz
            else "<td></td>",
        ]
        rows.append(f'<tr data-model="{html.escape(entry.id)}">{"".join(cells)}</tr>')
    version = html.escape(str(pricing["price_version"]))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>buzz: models and prices</title>
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1d1d1f; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e5e5e5; }}
td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
caption {{ text-align: left; color: #555; padding-bottom: .6rem; }}
</style>
</head>
<body>
<h1>Models buzz routes</h1>
<p>Every model below is reachable with one buzz key. Prices are buzz's rates in USD per million
tokens; <a href="/api/pricing">/api/pricing</a> has them with the vendors' list prices, as JSON.</p>
<div style="overflow-x:auto">
<table id="models">
<caption>{len(entries)} models &middot; price data: {version}</caption>
<thead><tr><th>Model</th><th>Vendor</th><th>Name</th><th>Aliases</th><th class=num>Context</th>
<th class=num>Input</th><th class=num>Output</th><th class=num>Cache write 5m / 1h / read</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</div>
</body>
</html>
""".encode()
