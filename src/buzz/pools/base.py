"""What a credential pool knows of each credential, and the Protocol its shared state is kept behind.

A pool spreads one vendor's requests over several upstream credentials (API keys, each with its
own base URL and weight) and takes a struggling one out of rotation for a while: a *hold*. Holds
are kept locally, for the request path to read without waiting on anything, and written to a
`HoldBoard`, which shares them between processes (`redis.py`) or keeps them in this one
(`memory.py`). Two holds on one credential keep the later deadline, wherever they were set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

# Why a credential was taken out of rotation. The first three pass by themselves; the last two
# (the upstream refused the key, or the account cannot pay) last until a probe succeeds.
Cause = Literal["rate_limited", "overloaded", "unreachable", "auth", "billing"]
CAUSES: tuple[Cause, ...] = ("rate_limited", "overloaded", "unreachable", "auth", "billing")
DISABLING: frozenset[str] = frozenset(("auth", "billing"))
# A disable's deadline: later than any hold, so "the later deadline wins" keeps it until a probe
# clears it. Milliseconds fit a double exactly (Redis's Lua numbers are doubles).
FOREVER = float(2**52)

State = Literal["healthy", "held", "disabled"]


@dataclass(frozen=True, slots=True)
class Hold:
    until: float  # unix seconds when it ends; FOREVER for a disable
    cause: Cause
    since: float  # unix seconds when it was set

    @property
    def disabling(self) -> bool:
        return self.cause in DISABLING


@dataclass(frozen=True, slots=True)
class CredentialView:
    """One credential as the console, `buzz upstreams`, the admin API and /metrics show it. Never
    its secret."""

    provider: str
    name: str
    weight: int
    base_url: str
    state: State
    cause: Cause | None  # why it is held or disabled
    until: float | None  # unix seconds: when a hold ends, or when a disabled one is probed next
    since: float | None  # unix seconds the hold or disable began
    in_flight: int  # requests this process has on it now
    # The tightest of the vendor's rate limits, as the fraction left (0 to 1), from the last
    # answer's headers, while their reset has not passed; None when unknown.
    headroom: float | None
    cooldowns: Mapping[Cause, int]  # holds this process set on it since it started, by cause


# Told of a hold set (provider, credential, hold) and of one lifted (provider, credential, set_before).
OnHold = Callable[[str, str, Hold], None]
OnClear = Callable[[str, str, float], None]
# (provider, credential name) -> the hold in force.
Holds = dict[tuple[str, str], Hold]


class HoldBoard(Protocol):
    """Where holds are shared. Every method may raise OSError when the board cannot be reached:
    the pool then goes on with what it knows locally."""

    async def put(self, provider: str, credential: str, hold: Hold) -> Hold:
        """Set `hold` unless one with a later deadline is in force; returns the one in force."""
        ...

    async def clear(self, provider: str, credential: str, set_before: float) -> bool:
        """Lift the hold on this credential if it was set at or before `set_before` (a probe that
        began then succeeded; a hold set since came from a newer answer and stays)."""
        ...

    async def read(self) -> Holds:
        """Every hold in force."""
        ...

    async def start(self, on_hold: OnHold, on_clear: OnClear) -> None:
        """Begin telling this process what the others do: `on_hold(provider, credential, hold)`
        for every hold in force and each one set from now on, `on_clear(provider, credential,
        set_before)` for one lifted. Its own changes may come back too: applying them again
        changes nothing. Never raises: a board that cannot be reached yet is tried again."""
        ...

    async def close(self) -> None: ...
