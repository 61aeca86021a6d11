"""Money as buzz keeps it: integer nano-dollars (1 USD = 10^9 nanos), parsed and shown exactly.

Every amount buzz reads from a person (a CLI option, an admin API field) and every amount it
shows comes through here, so there is one rule for each and no float anywhere near money.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

NANOS_PER_USD = 1_000_000_000
_NANOS = Decimal(NANOS_PER_USD)
UNPRICED = "—"  # a cost nobody could work out is unknown, never $0


def usd_to_nanos(amount: Decimal | str | int) -> int:
    """An amount in USD as nanos; ValueError if it is not a number or is finer than a nano-dollar."""
    try:
        nanos = Decimal(amount) * _NANOS
    except InvalidOperation as exc:
        raise ValueError(f"{amount} is not an amount in USD") from exc
    if not nanos.is_finite():
        raise ValueError(f"{amount!r} is not an amount in USD")
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{amount} has more precision than a nano-dollar")
    return int(nanos)


def usd_exact(nanos: int) -> str:
    """For scripts and JSON: exact, cents always, more digits only when they are not zero
    (500_000_000 -> "0.50", 1_500 -> "0.0000015")."""
    # In integers: an export formats two of these a row, and Decimal costs five times as much.
    whole, fraction = divmod(abs(nanos), 1_000_000_000)
    return f"{'-' if nanos < 0 else ''}{whole}.{f'{fraction:09d}'.rstrip('0').ljust(2, '0')}"


def usd_cents(nanos: int | None) -> str:
    """For people, in tables of balances and limits: "$1,234.50", or "—" when unknown."""
    return UNPRICED if nanos is None else f"${Decimal(nanos) / _NANOS:,.2f}"


def usd_fine(nanos: int | None) -> str:
    """For people, where single requests matter (usage): micro-dollars, or "—" when unknown."""
    return UNPRICED if nanos is None else f"${Decimal(nanos) / _NANOS:,.6f}"
