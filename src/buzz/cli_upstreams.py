"""`buzz upstreams`: the running gateway's vendor credentials, asked of its admin API.

The pools' state lives in the gateway's memory (and, for holds, in Redis when processes share
one), not in the database, so the command asks the gateway over HTTP with the operator token.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from buzz.changes import span
from buzz.config import Config

PATH = "/admin/api/upstreams"
TIMEOUT = 10.0
COLUMNS = ("vendor", "name", "weight", "state", "cause", "in flight", "headroom", "cooldowns", "base URL")
# Addresses that mean "every interface" when listened on; a client reaches them on loopback.
_ANY = frozenset(("0.0.0.0", "::", ""))  # noqa: S104 - compared with, never bound


def gateway_url(config: Config) -> str:
    """Where this configuration's gateway listens, as a client reaches it."""
    host = "127.0.0.1" if config.host in _ANY else config.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{config.port}"


def fetch(url: str, token: str | None, action: str | None = None) -> bytes:
    """The admin API's answer, as sent; a ClickException that says what to do on any failure.
    `action`: a POST to that path under the upstreams route (`/anthropic/acct-a/restore`)."""
    if not token:
        raise click.ClickException(
            "no admin token configured: set BUZZ_ADMIN_TOKEN (or [admin] token in the config file) "
            "to the running gateway's operator token"
        )
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--url")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
        url.rstrip("/") + PATH + quote(action or ""),
        headers={"authorization": f"Bearer {token}", "accept": "application/json"},
        method="POST" if action else "GET",
        data=b"" if action else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - checked above
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        message = _error_message(exc.read())
        if action and exc.code == 404 and message.startswith("no credential"):
            raise click.ClickException(f"the gateway at {url}: {message}") from None
        raise click.ClickException(_refusal(url, exc.code, message)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise click.ClickException(
            f"no buzz gateway reachable at {url} ({reason}): is it running? Give its address with --url"
        ) from None
    try:
        document = json.loads(body)
    except ValueError:
        raise click.ClickException(f"{url} answered something other than JSON: is it a buzz gateway?") from None
    if action:
        return body
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise click.ClickException(f"{url} answered JSON without a list of credentials: is it a buzz gateway?")
    return body


def _refusal(url: str, status: int, message: str) -> str:
    if status == 401:
        return f"the gateway at {url} refused the admin token: it runs with another BUZZ_ADMIN_TOKEN"
    if status == 404:
        # The admin API answers 404 when the gateway has no token of its own, or is too old to know
        # this route; its message tells which.
        return f"the gateway at {url} has no {PATH}: {message or 'not found'}"
    return f"the gateway at {url} answered {status}" + (f": {message}" if message else "")


def _error_message(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    error = document.get("error") if isinstance(document, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else ""


def _when(text: str | None, now: float) -> str:
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return f"{text} ({span(moment.timestamp() - now)})"


def _state(item: dict[str, Any], now: float) -> str:
    state = str(item.get("state", ""))
    until = _when(item.get("until"), now)
    if state == "held":
        return f"held until {until}"
    if state == "disabled":
        return f"disabled, next probe {until}" if until else "disabled, not probed (its vendor's only credential)"
    return state


def _cooldowns(counts: object) -> str:
    if not isinstance(counts, dict):
        return ""
    return ", ".join(f"{cause} {count}" for cause, count in counts.items() if count) or "none"


def table(credentials: Sequence[dict[str, Any]], now: float) -> Table:
    out = Table(*COLUMNS, title="upstreams")
    for item in credentials:
        headroom = item.get("headroom")
        out.add_row(
            str(item.get("provider", "")),
            str(item.get("name", "")),
            str(item.get("weight", "")),
            _state(item, now),
            str(item.get("cause") or ""),
            str(item.get("in_flight", "")),
            "unknown" if headroom is None else f"{float(headroom):.0%}",
            _cooldowns(item.get("cooldowns")),
            str(item.get("base_url", "")),
        )
    return out
