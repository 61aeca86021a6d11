"""Who a request is billed to beyond its key: `x-buzz-user` and `x-buzz-tags`.

Both are text a client chose, stored in the ledger and shown in tables, so they are read
strictly: UTF-8 (a name like "Zoë" must be stored as Zoë, not as Latin-1 mojibake), no control
characters, bounded in length and number. Anything else is refused with a 400 that names the
header, rather than stored garbled.
"""

from __future__ import annotations

import re

from buzz.errors import GatewayError, Kind

MAX_USER = 256
MAX_TAGS = 16
MAX_TAG = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def header_text(value: bytes, header: str, limit: int) -> str:
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise GatewayError(Kind.INVALID_REQUEST, f"{header}: not valid UTF-8") from None
    if _CONTROL.search(text):
        raise GatewayError(Kind.INVALID_REQUEST, f"{header}: control characters are not allowed")
    if len(text) > limit:
        raise GatewayError(Kind.INVALID_REQUEST, f"{header}: longer than {limit} characters")
    return text


def user(value: bytes) -> str | None:
    return header_text(value, "x-buzz-user", MAX_USER) or None


def tags(value: bytes) -> tuple[str, ...]:
    """`feature=search,team=ml` -> ("feature=search", "team=ml"), each tag once, in order."""
    found: list[str] = []
    for part in header_text(value, "x-buzz-tags", MAX_TAGS * (MAX_TAG + 1)).split(","):
        tag = part.strip()
        if len(tag) > MAX_TAG:
            raise GatewayError(Kind.INVALID_REQUEST, f"x-buzz-tags: a tag is longer than {MAX_TAG} characters")
        if tag and tag not in found:
            found.append(tag)
    if len(found) > MAX_TAGS:
        raise GatewayError(Kind.INVALID_REQUEST, f"x-buzz-tags: more than {MAX_TAGS} tags")
    return tuple(found)
