"""Credential pools: which of a vendor's upstream credentials a request goes out with, and which
are out of rotation for now.

Choosing reads only this process's memory, so it costs the request path no wait:
- a credential on hold, or disabled, is skipped;
- those whose rate-limit headers said a limit is spent (until its reset) are skipped while any
  other has room;
- among the rest, a smooth weighted round-robin (nginx's) over each credential's weight, divided
  by one more than its requests in flight and scaled by the share of its tightest limit left. With
  nothing in flight, requests are spread by weight exactly; under load, a busy or nearly spent
  credential gets less.

Holds come from answers (`signals.cause_of`): a 429 waits out its `retry-after` (or the spent
limit's reset), an overload or a refused connection gets a short backoff that doubles while it
repeats, and a refused key or an account that cannot pay disables the credential until a probe
(a GET of the vendor's model list with that key) succeeds. A hold is set here at once, then written
to the `HoldBoard`, which shares it with the other processes; two holds keep the later deadline.
A refused connection is not shared (it may be this host's own network), nor is a pool of one's
hold (it serves whatever its state).
Nothing else cools a credential: not a client's 4xx, not a client that left, not buzz's own errors.

Routes bound to one upstream account (files, batches, model lists) always use the first
credential, whatever its state: the objects they name exist in that account only. So does a vendor
with a single credential: holding it could only replace the vendor's own answer with buzz's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from buzz import providers
from buzz.config import Config, CredentialConfig
from buzz.counters import Counters
from buzz.errors import GatewayError, Kind, where
from buzz.pools.base import CAUSES, FOREVER, Cause, CredentialView, Hold, HoldBoard, State
from buzz.pools.signals import Room, cause_of, retry_after, room

log = logging.getLogger("buzz.pools")

# A 429 that says nothing of when to come back is held this long.
DEFAULT_RATE_LIMIT_HOLD = 5.0
# No hold longer than this from one answer: a wrong or hostile header must not park a credential
# for days. A credential still limited after it is held again by its next 429.
MAX_HOLD = 3600.0
# Overloads and refused connections: 1 s, then doubling while they repeat, up to this.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
# A refused key is probed at once (a client's odd request may have caused the refusal), then every
# `probe_interval`; an account that cannot pay is probed after this, since a model list succeeds
# for it either way and only a real request tells.
BILLING_PROBE_DELAY = 300.0
# Room figures are trusted until their reset, and never longer than this.
_ROOM_LIFETIME = 60.0
# How much of a credential's share is kept while its tightest limit is nearly spent.
_MIN_ROOM_FACTOR = 0.05

# One probe: the credential's provider and configuration -> the HTTP status of its model list.
Probe = Callable[[str, CredentialConfig], Awaitable[int]]


class Credential:
    """One credential's state in this process."""

    __slots__ = ("backoff", "config", "cooldowns", "current", "hold", "in_flight", "next_probe", "room", "room_until")

    def __init__(self, config: CredentialConfig) -> None:
        self.config = config
        self.in_flight = 0
        self.current = 0.0  # the smooth round-robin's running score
        self.hold: Hold | None = None
        self.room: Room | None = None
        self.room_until = 0.0  # unix seconds the room figures are trusted until
        self.backoff = 0.0  # the last overload/unreachable backoff, doubled while they repeat
        self.next_probe = 0.0  # unix seconds; for a disabled credential
        self.cooldowns: dict[Cause, int] = {}

    @property
    def name(self) -> str:
        return self.config.name

    def held(self, now: float) -> bool:
        return self.hold is not None and self.hold.until > now


class Lease:
    """One request's use of one credential: what its answer said goes back to the pool, and
    `release` ends it (every path calls it once)."""

    __slots__ = ("_pools", "_status", "bound", "credential", "provider", "released", "started")

    def __init__(self, pools: Pools, provider: str, credential: Credential, started: float, bound: bool) -> None:
        self._pools = pools
        self.provider = provider
        self.credential = credential
        self.started = started  # unix seconds it was chosen: what its answer can speak for
        self.bound = bound  # an account-bound route: it went out whatever the credential's state
        self.released = False
        self._status = 0
        credential.in_flight += 1

    @property
    def name(self) -> str:
        return self.credential.config.name

    @property
    def config(self) -> CredentialConfig:
        return self.credential.config

    def answered(self, status: int, headers: Mapping[str, str]) -> None:
        """The upstream's status and headers arrived. Never raises: what the pool makes of an
        answer must not stand between the client and that answer."""
        self._status = status
        try:
            self._pools.answered(self, status, headers)
        except Exception as exc:
            self._pools.failed(exc)

    def unreachable(self) -> None:
        """No connection could be made: nothing of the request left."""
        self._pools.cool(self, "unreachable", None)

    def release(self, error_type: str | None = None) -> None:
        """The exchange is over; `error_type` is what the meter read in the upstream's body."""
        if self.released:
            return
        self.released = True
        self.credential.in_flight -= 1
        if error_type is not None and self._status:
            cause = cause_of(self._status, error_type)
            if cause in ("billing", "overloaded") and cause != cause_of(self._status):
                # Only the body told (OpenAI's quota 429, an overload event in a 200 stream).
                self._pools.cool(self, cause, None)


class Pools:
    """Every configured vendor's pool, and the holds on its credentials."""

    def __init__(
        self,
        config: Config,
        board: HoldBoard,
        probe: Probe,
        counters: Counters,
        clock: Callable[[], float] = time.time,
        probe_interval: float = 30.0,
    ) -> None:
        self._pools: dict[str, list[Credential]] = {
            name: [Credential(credential) for credential in upstream.credentials]
            for name, upstream in config.providers.items()
            if upstream.credentials
        }
        self._board = board
        self._probe = probe
        self._counters = counters
        self._clock = clock
        self._probe_interval = probe_interval
        # The pools that choose: only there is a disabled credential probed (a single one keeps
        # serving, and its next success restores it) and is room read.
        self._choosing = {provider for provider, pool in self._pools.items() if len(pool) > 1}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._prober: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._board_failing = False

    async def start(self) -> None:
        await self._board.start(self._shared_hold, self._shared_clear)
        self._prober = asyncio.create_task(self._probe_loop(), name="buzz-credential-probes")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *(t for t in (self._prober,) if t is not None), return_exceptions=True)
        await self._board.close()

    # The request path.

    def acquire(self, provider: str, tried: Sequence[str] = (), bound: bool = False) -> Lease:
        """A credential for one request, other than those `tried`. `bound`: the route's objects
        live in one upstream account (files, batches): always the first credential."""
        pool = self._pools[provider]
        now = self._clock()
        if bound or len(pool) == 1:
            # A single credential has nowhere to hand its requests to: its state is kept and shown,
            # and the client gets the vendor's own answer (and its own retry-after), never buzz's.
            return Lease(self, provider, pool[0], now, bound)
        chosen = _choose(pool, tried, now)
        if chosen is None:
            raise self._unavailable(provider, pool, now)
        return Lease(self, provider, chosen, now, bound)

    def untried(self, provider: str, tried: Sequence[str]) -> bool:
        """Whether the pool has a credential to try that is not among `tried`."""
        pool = self._pools[provider]
        return len(pool) > 1 and any(credential.name not in tried for credential in pool)

    def answered(self, lease: Lease, status: int, headers: Mapping[str, str]) -> None:
        provider, credential = lease.provider, lease.credential
        now = self._clock()
        # Room only steers a choice: a single credential's is not read (it costs every answer).
        if provider in self._choosing:
            figures = room(headers, now)
            if figures is not None:
                credential.room, credential.room_until = figures, min(figures.reset, now + _ROOM_LIFETIME)
        cause = cause_of(status)
        if cause is not None:
            self.cool(lease, cause, headers)
        elif status < 400:
            hold = credential.hold
            if hold is None or hold.since < lease.started:
                credential.backoff = 0.0
            # A single credential keeps serving while held, so its own success is the proof that
            # the hold is over, if the hold came before the request did. In a pool that chooses,
            # only a probe lifts a disable: an account-bound route's success (a model list) would
            # prove nothing about billing.
            before = hold is not None and hold.since < lease.started
            if provider not in self._choosing and before and credential.held(now):
                self._restored(provider, credential, lease.started)

    def failed(self, exc: Exception) -> None:
        self._counters.add("credential_answer_unread")
        log.error("credential pool: an answer was not read (%s at %s)", type(exc).__name__, where(exc))

    def cool(self, lease: Lease, cause: Cause, headers: Mapping[str, str] | None) -> None:
        """Take the lease's credential out of rotation for `cause`, here and, through the board,
        everywhere (a refused connection: here only, see below)."""
        provider, credential = lease.provider, lease.credential
        if lease.bound and cause in ("rate_limited", "overloaded"):
            return  # files and batches have limits of their own: a 429 there says nothing of messages
        now = self._clock()
        current = credential.hold
        if cause in ("overloaded", "unreachable"):
            if current is not None and current.until > lease.started:
                return  # sent before the hold in force ended: the same episode, not a new one
            credential.backoff = min(MAX_BACKOFF, credential.backoff * 2 or FIRST_BACKOFF)
            until = now + credential.backoff
        elif cause == "rate_limited":
            until = now + min(MAX_HOLD, self._rate_limit_wait(credential, headers, now))
        else:
            until = FOREVER
        hold = Hold(until, cause, now)
        credential.cooldowns[cause] = credential.cooldowns.get(cause, 0) + 1
        self._counters.add(f"credential_{cause}")
        if not _later(hold, current):
            return  # a later hold is in force already: it stands as it is
        credential.hold = hold
        if hold.disabling:
            credential.next_probe = now + (BILLING_PROBE_DELAY if cause == "billing" else 0.0)
            if provider in self._choosing:
                self._wake.set()
        if current is None or current.until <= now or hold.disabling:  # once a hold, not once an answer
            shown = "disabled until a probe succeeds" if hold.disabling else f"held for {until - now:.1f} s"
            log.warning("credential %s/%s %s: %s", provider, credential.name, shown, cause)
        # Shared only where others choose: a single credential serves whatever its state. Nor is
        # a refused connection: it may be this host's own network or resolver failing, and other
        # hosts must not stop using a credential they can reach.
        if provider in self._choosing and cause != "unreachable":
            self._spawn(self._share(provider, credential.name, hold))

    def restore(self, provider: str, name: str) -> bool:
        """The operator says it is fixed (a key replaced, an account topped up): back in rotation
        now, here and everywhere, without waiting for a probe. False: no such credential."""
        credential = self._find(provider, name)
        if credential is None:
            return False
        now = self._clock()
        self._shared_clear(provider, name, now)
        if provider in self._choosing:
            self._spawn(self._unshare(provider, name, now))
        log.warning("credential %s/%s: put back in rotation by the operator", provider, name)
        return True

    # Views.

    def views(self) -> list[CredentialView]:
        now = self._clock()
        return [self._view(provider, credential, now) for provider, pool in self._pools.items() for credential in pool]

    def _view(self, provider: str, credential: Credential, now: float) -> CredentialView:
        config, hold = credential.config, credential.hold
        state: State = "healthy"
        until: float | None = None
        if hold is not None and hold.until > now:
            state = "disabled" if hold.disabling else "held"
            if not hold.disabling:
                until = hold.until
            elif provider in self._choosing:
                until = max(credential.next_probe, now)
        figures = credential.room if credential.room_until > now else None
        return CredentialView(
            provider=provider,
            name=config.name,
            weight=config.weight,
            base_url=config.base_url,
            state=state,
            cause=None if state == "healthy" or hold is None else hold.cause,
            until=until,
            since=None if state == "healthy" or hold is None else hold.since,
            in_flight=credential.in_flight,
            headroom=None if figures is None else figures.left,
            cooldowns={cause: credential.cooldowns.get(cause, 0) for cause in CAUSES},
        )

    # Inner workings.

    def _rate_limit_wait(self, credential: Credential, headers: Mapping[str, str] | None, now: float) -> float:
        asked = retry_after(headers, now) if headers is not None else None
        if asked is not None:
            return asked
        figures = credential.room
        if figures is not None and figures.exhausted_until is not None and figures.exhausted_until > now:
            return figures.exhausted_until - now
        return DEFAULT_RATE_LIMIT_HOLD

    def _unavailable(self, provider: str, pool: list[Credential], now: float) -> GatewayError:
        vendor = providers.get(provider).display_name
        soonest = min(
            (max(c.next_probe, now) if c.hold.disabling else c.hold.until)
            if c.hold is not None and c.hold.until > now
            else now
            for c in pool
        )
        wait = max(1, math.ceil(soonest - now))
        causes = sorted({c.hold.cause for c in pool if c.hold is not None and c.held(now)})
        return GatewayError(
            Kind.UNAVAILABLE,
            f"every {vendor} credential of this gateway is out of rotation ({', '.join(causes)}); "
            f"try again in {wait} s",
            [(b"retry-after", b"%d" % wait)],
        )

    def _shared_hold(self, provider: str, name: str, hold: Hold) -> None:
        """Another process set a hold (or this one, echoed): keep the later deadline."""
        credential = self._find(provider, name)
        if credential is None:
            return
        now = self._clock()
        if not hold.disabling and hold.until > now + MAX_HOLD:
            # Another host's clock may run ahead of this one's: no hold from there lasts longer
            # than one set here could.
            hold = Hold(now + MAX_HOLD, hold.cause, hold.since)
        if _later(hold, credential.hold):
            credential.hold = hold
            if hold.disabling:
                delay = BILLING_PROBE_DELAY if hold.cause == "billing" else self._probe_interval
                credential.next_probe = max(credential.next_probe, now + delay)

    def _shared_clear(self, provider: str, name: str, set_before: float) -> None:
        """A probe somewhere succeeded: lift a hold set no later than it began."""
        credential = self._find(provider, name)
        if credential is not None and credential.hold is not None and credential.hold.since <= set_before:
            credential.hold = None
            credential.backoff = 0.0

    def _find(self, provider: str, name: str) -> Credential | None:
        return next((c for c in self._pools.get(provider, ()) if c.name == name), None)

    async def _share(self, provider: str, name: str, hold: Hold) -> None:
        try:
            await self._board.put(provider, name, hold)
        except OSError as exc:
            self._counters.add("credential_hold_share_failed")
            if not self._board_failing:
                log.warning("credential holds: not shared (%s); they hold in this process", type(exc).__name__)
            self._board_failing = True
        else:
            self._board_failing = False

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe_loop(self) -> None:
        """Probes each disabled credential when due; wakes at once when one is disabled."""
        while True:
            now = self._clock()
            due = [
                (provider, c)
                for provider, pool in self._pools.items()
                for c in pool
                if provider in self._choosing and c.hold is not None and c.hold.disabling and c.held(now)
                if c.next_probe <= now
            ]
            for provider, credential in due:
                credential.next_probe = now + self._probe_interval
                self._spawn(self._probe_one(provider, credential))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _probe_one(self, provider: str, credential: Credential) -> None:
        began = self._clock()
        try:
            status = await self._probe(provider, credential.config)
        except Exception as exc:
            log.info("credential %s/%s: probe failed (%s)", provider, credential.name, type(exc).__name__)
            return
        if status != 200:
            log.info("credential %s/%s: probe answered %d; still disabled", provider, credential.name, status)
            return
        self._restored(provider, credential, began)

    def _restored(self, provider: str, credential: Credential, began: float) -> None:
        """It answered well to a request made at `began`: lift holds set before then, here and,
        where holds are shared, everywhere."""
        log.warning("credential %s/%s: answered; back in rotation", provider, credential.name)
        self._counters.add("credential_restored")
        self._shared_clear(provider, credential.name, began)
        if provider in self._choosing:
            self._spawn(self._unshare(provider, credential.name, began))

    async def _unshare(self, provider: str, name: str, began: float) -> None:
        try:
            await self._board.clear(provider, name, began)
        except OSError:
            self._counters.add("credential_hold_share_failed")


def _later(hold: Hold, current: Hold | None) -> bool:
    return current is None or hold.until > current.until


def _choose(pool: list[Credential], tried: Sequence[str], now: float) -> Credential | None:
    """Smooth weighted round-robin over the credentials in rotation, preferring those with room."""
    roomy: list[tuple[Credential, float]] = []
    spent: list[tuple[Credential, float]] = []
    for credential in pool:
        if credential.held(now) or credential.name in tried:
            continue
        share = credential.config.weight / (credential.in_flight + 1)
        figures = credential.room
        if figures is not None and credential.room_until > now:
            if figures.exhausted_until is not None and figures.exhausted_until > now:
                spent.append((credential, share))
                continue
            share *= max(figures.left, _MIN_ROOM_FACTOR)
        roomy.append((credential, share))
    candidates = roomy or spent
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0][0]
    total = 0.0
    best: Credential | None = None
    for credential, share in candidates:
        credential.current += share
        total += share
        if best is None or credential.current > best.current:
            best = credential
    assert best is not None
    best.current -= total
    return best
