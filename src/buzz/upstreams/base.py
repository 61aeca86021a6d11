"""What every vendor's usage rules hand the meter: the Protocol they implement and its result.

The meter (`buzz.proxy.meter`) turns relayed bytes into events and bodies; a vendor's rules
(`buzz.upstreams.<vendor>`) know where usage is in them. The types both sides share live here,
below both, so the vendor modules never import the request path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from buzz.billing.usage import Usage, UsageSource

# Why the meter left part of an answer unread, kept in the ledger row. Fixed strings: never text
# from the upstream.
UsageNote = Literal["body_over_cap", "event_over_cap", "decoded_over_cap", "lines_over_cap"]


@dataclass(slots=True)
class MeterResult:
    usage: Usage | None
    source: UsageSource
    model: str | None = None  # the model the upstream says served the request
    error_type: str | None = None  # an upstream error type seen in the body or the stream
    usage_note: UsageNote | None = None  # set when the meter skipped part of the answer


class UsageRules(Protocol):
    """One vendor's rules for finding usage in what it sends."""

    def on_event(self, event: bytes | None, data: bytes) -> None: ...

    def on_body(self, body: bytes) -> None: ...

    def on_skipped(self, size: int) -> None:
        """Called once before `result` when the meter left part of the answer unread (over its
        cap): `size` bytes to count as output, and whatever was read is no longer final."""
        ...

    def result(self, complete: bool) -> MeterResult: ...


class NoUsage:
    """The rules of an answer that is never billed (count_tokens, model lists): reads nothing."""

    def on_event(self, event: bytes | None, data: bytes) -> None:
        return

    def on_body(self, body: bytes) -> None:
        return

    def on_skipped(self, size: int) -> None:
        return

    def result(self, complete: bool) -> MeterResult:
        return MeterResult(None, "none")
