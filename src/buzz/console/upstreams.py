"""Upstreams, for the operator only: every vendor credential and whether it is in rotation.

The vendor accounts behind the gateway are the operator's business. A member's session gets a
404 here, as for anything else it may not see. The page reads the pools' in-memory views on each
load and asks nothing of the vendors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buzz import providers
from buzz.changes import span
from buzz.console.context import PREFIX, Context, NotFound
from buzz.pools.base import CAUSES, Cause, CredentialView

UPSTREAMS = f"{PREFIX}/upstreams"

# What each cause means, in the words an operator acts on.
CAUSE_LABELS: Mapping[Cause, str] = MappingProxyType(
    {
        "rate_limited": "rate limited",
        "overloaded": "overloaded",
        "unreachable": "unreachable",
        "auth": "key refused",
        "billing": "billing",
    }
)
_CAUSE_NOTES: Mapping[Cause, str] = MappingProxyType(
    {
        "rate_limited": "the vendor answered 429",
        "overloaded": "the vendor said it is overloaded",
        "unreachable": "no connection could be made",
        "auth": "the vendor refused the key",
        "billing": "the account cannot pay",
    }
)


@dataclass(frozen=True, slots=True)
class Cooldown:
    cause: str
    label: str
    count: int


@dataclass(frozen=True, slots=True)
class CredentialLine:
    name: str
    base_url: str
    weight: int
    state: str  # healthy, held, disabled
    cause: str  # the code, "" when healthy
    cause_label: str
    cause_note: str
    until: str  # a hold's end or a disabled one's next probe, "" when none
    until_in: str  # how long from now, "" when none
    since: str
    in_flight: int
    headroom: float | None
    headroom_text: str
    cooldowns: list[Cooldown]


def clock_time(unix: float) -> str:
    """Seconds matter here: most holds last less than a minute."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def credential_line(view: CredentialView, now: float) -> CredentialLine:
    cause = view.cause
    counts = view.cooldowns
    cooldowns = [Cooldown(name, CAUSE_LABELS[name], counts[name]) for name in CAUSES if counts.get(name)]
    return CredentialLine(
        name=view.name,
        base_url=view.base_url,
        weight=view.weight,
        state=view.state,
        cause=cause or "",
        cause_label="" if cause is None else CAUSE_LABELS[cause],
        cause_note="" if cause is None else _CAUSE_NOTES[cause],
        until="" if view.until is None else clock_time(view.until),
        until_in="" if view.until is None else span(view.until - now),
        since="" if view.since is None else clock_time(view.since),
        in_flight=view.in_flight,
        headroom=view.headroom,
        headroom_text="unknown" if view.headroom is None else f"{view.headroom:.0%} left",
        cooldowns=cooldowns,
    )


@dataclass(frozen=True, slots=True)
class VendorGroup:
    provider: str
    vendor: str
    credentials: list[CredentialLine]

    @property
    def in_rotation(self) -> int:
        return sum(line.state == "healthy" for line in self.credentials)


def vendor_groups(views: Sequence[CredentialView], now: float) -> list[VendorGroup]:
    """Each vendor's credentials, vendors in the registry's order, credentials in the config's."""
    return [
        VendorGroup(provider, providers.get(provider).display_name, lines)
        for provider in providers.NAMES
        if (lines := [credential_line(view, now) for view in views if view.provider == provider])
    ]


def routes(ctx: Context, credentials: Callable[[], Sequence[CredentialView]]) -> list[Route]:
    async def listing(request: Request) -> Response:
        session = ctx.session(request)
        if not session.operator:
            raise NotFound
        now = ctx.wall_clock()
        groups = vendor_groups(credentials(), now)
        return ctx.page(
            request,
            "upstreams.html",
            session,
            section="upstreams",
            vendors=groups,
            total=sum(len(group.credentials) for group in groups),
            out=sum(len(group.credentials) - group.in_rotation for group in groups),
            read_at=clock_time(now),
        )

    return [Route(UPSTREAMS, listing, methods=["GET"])]
