"""Project console tokens: `buzzc-<id>-<secret>`, for a project's members to sign in to the console
and read its usage and export.

They are made and checked like API keys (`buzz.proxy.auth`): a public id, a 190-bit secret of
which only a SHA-256 is stored, a constant-time comparison. The prefix differs, so neither kind
of credential can ever be taken for the other.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from buzz.store.base import ConsoleTokenRecord, Store

_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_TOKEN_RE = re.compile(r"buzzc-([a-z0-9]{12})-([A-Za-z0-9]{32})")


@dataclass(frozen=True, slots=True)
class NewConsoleToken:
    token_id: str
    secret_hash: bytes
    token: str  # the whole token, shown once


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def generate() -> NewConsoleToken:
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))
    return NewConsoleToken(token_id, _hash(secret), f"buzzc-{token_id}-{secret}")


def verify(store: Store, token: str | None) -> ConsoleTokenRecord | None:
    """The live token record `token` is, or None (malformed, unknown, wrong secret, revoked)."""
    match = _TOKEN_RE.fullmatch(token) if token else None
    if match is None:
        return None
    record = store.find_console_token(match[1])
    if record is None or record.revoked_at is not None:
        return None
    return record if hmac.compare_digest(record.secret_hash, _hash(match[2])) else None
