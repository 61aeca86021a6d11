"""What an upstream's answer says about the credential that sent it: a cause to hold it, how long
to wait, and how much of its rate limits is left.

Read from the status, the headers and the error type the meter found in the body; never from the
client's side of the exchange. Anthropic gives each limit's reset as an RFC 3339 time
(`anthropic-ratelimit-requests-reset`), OpenAI and xAI as a Go duration from now
(`x-ratelimit-reset-tokens: 6m0s`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from buzz.pools.base import Cause

# Answers that say the account cannot pay, whatever their status (OpenAI's is a 429).
_BILLING_TYPES = frozenset(("billing_error", "insufficient_quota"))
_OVERLOADED_TYPES = frozenset(("overloaded_error",))
# Each limit's (limit, remaining, reset) headers, named once: read on every answer of a pool.
_ANTHROPIC_LIMITS = tuple(
    tuple(f"anthropic-ratelimit-{kind}-{part}" for part in ("limit", "remaining", "reset"))
    for kind in ("requests", "tokens", "input-tokens", "output-tokens")
)
_OPENAI_LIMITS = tuple(
    tuple(f"x-ratelimit-{part}-{kind}" for part in ("limit", "remaining", "reset")) for kind in ("requests", "tokens")
)
# A Go duration's parts, largest unit first, each optional: `1h2m3.5s`, `6m0s`, `12ms`.
_NUMBER = r"(\d+(?:\.\d+)?)"
_GO_DURATION = re.compile(
    rf"(?:{_NUMBER}h)?(?:{_NUMBER}m(?!s))?(?:{_NUMBER}s)?(?:{_NUMBER}ms)?(?:{_NUMBER}(?:us|µs))?(?:{_NUMBER}ns)?"
)
_GO_SCALES = (3600.0, 60.0, 1.0, 1e-3, 1e-6, 1e-9)


def cause_of(status: int, error_type: str | None = None) -> Cause | None:
    """Why this answer should take its credential out of rotation, if it should.

    A client's own 4xx (400, 404, 413, 422...) says nothing about the credential, nor does a 500:
    only a refusal of the key, an account that cannot pay, a rate limit or an overload does.
    `error_type` comes from the body, which a stream may carry with a 200 (an `overloaded_error`
    event mid-stream)."""
    if error_type in _BILLING_TYPES or status == 402:
        return "billing"
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status in (503, 529) or error_type in _OVERLOADED_TYPES:
        return "overloaded"
    return None


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the upstream asked to wait: `retry-after-ms`, or `retry-after` in seconds or as an
    HTTP date. None when it asked nothing readable."""
    value = headers.get("retry-after-ms")
    if value is not None and (seconds := _number(value)) is not None:
        return seconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _number(value)) is not None:
        return seconds
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Room(NamedTuple):
    """The tightest of the rate limits one answer reported."""

    left: float  # the fraction of that limit left, 0 to 1
    reset: float  # unix seconds when it refills (the figures are stale after)
    exhausted_until: float | None  # the latest reset among limits with nothing left


def room(headers: Mapping[str, str], now: float) -> Room | None:
    """The rate-limit headers of an Anthropic, OpenAI or xAI answer; None without any."""
    figures: list[tuple[float, float]] = []  # (fraction left, reset)
    for limit, remaining, resets in _ANTHROPIC_LIMITS:
        capacity = headers.get(limit)
        if capacity is not None:
            figure = _figure(capacity, headers.get(remaining), _timestamp(headers.get(resets)))
            if figure is not None:
                figures.append(figure)
    if not figures:
        for limit, remaining, resets in _OPENAI_LIMITS:
            capacity = headers.get(limit)
            if capacity is not None:
                wait = _go_duration(headers.get(resets))
                figure = _figure(capacity, headers.get(remaining), None if wait is None else now + wait)
                if figure is not None:
                    figures.append(figure)
    if not figures:
        return None
    left, reset = min(figures)
    spent = [at for fraction, at in figures if fraction <= 0]
    return Room(left, reset, max(spent) if spent else None)


def _figure(limit: str | None, remaining: str | None, reset: float | None) -> tuple[float, float] | None:
    capacity, left = _number(limit), _number(remaining)
    if capacity is None or left is None or capacity <= 0 or reset is None:
        return None
    return min(1.0, max(0.0, left / capacity)), reset


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        return None


def _go_duration(value: str | None) -> float | None:
    """`6m0s`, `1s`, `12ms`, `1h2m3.5s` -> seconds."""
    if not value:
        return None
    # The usual forms first: a plain number of milliseconds or of seconds.
    for unit, scale in (("ms", 1e-3), ("s", 1.0)):
        number = value[: -len(unit)]
        if value.endswith(unit) and number.replace(".", "", 1).isdecimal():
            return float(number) * scale
    match = _GO_DURATION.fullmatch(value.strip())
    if match is None or match.lastindex is None:
        return None
    return sum(float(part) * scale for part, scale in zip(match.groups(), _GO_SCALES, strict=True) if part)
