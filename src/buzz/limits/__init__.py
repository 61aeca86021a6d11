"""Rate limits, spend caps and prepaid balances: reserve before forwarding, settle after.

The backends live in `buzz.limits.memory` (embedded default) and `buzz.limits.redis`
(scaled out); import the one you use, so the embedded default never imports a Redis client.
"""

from buzz.limits.base import (
    Ask,
    BalanceStore,
    Limiter,
    LimiterUnavailable,
    LimitExceeded,
    LimitName,
    Limits,
    Rejection,
    Remaining,
    Reservation,
    Scope,
)

__all__ = [
    "Ask",
    "BalanceStore",
    "LimitExceeded",
    "LimitName",
    "Limiter",
    "LimiterUnavailable",
    "Limits",
    "Rejection",
    "Remaining",
    "Reservation",
    "Scope",
]
