"""The ASGI types buzz uses, the one way it reads request headers, and the one way it answers
with a small response of its own (anything it does not relay from an upstream)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]


def header_map(raw: RawHeaders) -> dict[bytes, bytes]:
    """Each request header by its (lowercase) name. A header sent twice counts by its first value,
    everywhere in buzz: a second `x-api-key` or `x-buzz-user` can never override the first."""
    return dict(reversed(raw))


async def send_response(
    send: Send, status: int, body: bytes, content_type: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A whole response in two messages: status and headers, then the body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
