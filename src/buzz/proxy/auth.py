"""authenticate: a presented key -> the principal it belongs to.

Keys look like `buzz-<id>-<secret>`. The id is public (it names the key in the ledger and the
CLI); only a SHA-256 of the secret is stored. The secret carries 190 bits of randomness, so a
fast hash is enough: there is nothing to brute-force that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from buzz.errors import GatewayError, Kind
from buzz.limits.base import Limits, Scope
from buzz.store.base import KeyRecord, ProjectRecord, Store, StoreUnavailable

_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 12
_SECRET_LENGTH = 32
_KEY_RE = re.compile(rf"buzz-([a-z0-9]{{{_ID_LENGTH}}})-([A-Za-z0-9]{{{_SECRET_LENGTH}}})")
# Any buzz key, wherever it appears: buzz never forwards one (headers, query, path).
ANY_KEY = re.compile(_KEY_RE.pattern.encode())
_NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    project: str
    key: KeyRecord | None = None  # with its limits, expiry and model allow-list
    project_record: ProjectRecord | None = None  # with the project's limits and prepaid flag
    # What its requests are charged against; empty when neither key nor project has limits.
    scopes: tuple[Scope, ...] = ()


def charged_scopes(key: KeyRecord, project: ProjectRecord | None) -> tuple[Scope, ...]:
    """The key's own limits and its project's (with the prepaid balance), where there are any."""
    scopes = []
    if key.limits != _NO_LIMITS:
        scopes.append(Scope("key", key.id, key.limits))
    if project is not None and (project.limits != _NO_LIMITS or project.prepaid):
        scopes.append(Scope("project", project.name, project.limits, prepaid=project.prepaid))
    return tuple(scopes)


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret_hash: bytes
    token: str  # the whole key, shown to the operator once


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def generate_key() -> NewKey:
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH))
    return NewKey(key_id, hash_secret(secret), f"buzz-{key_id}-{secret}")


QUERY_KEY = b"?key"  # where Gemini clients may put a key: the `key` query parameter


def presented_key(headers: dict[bytes, bytes], query: bytes = b"") -> tuple[str | None, bytes | None]:
    """The key the client sent and where: `x-api-key`, `authorization` (Bearer), Gemini's
    `x-goog-api-key`, or `?key=` when `query` is given (only the Gemini surface passes it)."""
    value = headers.get(b"x-api-key")
    if value is not None:
        return value.decode("latin-1").strip(), b"x-api-key"
    value = headers.get(b"authorization")
    if value is not None:
        scheme, _, token = value.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer":
            return token.strip(), b"authorization"
    value = headers.get(b"x-goog-api-key")
    if value is not None:
        return value.decode("latin-1").strip(), b"x-goog-api-key"
    for part in query.split(b"&") if query else ():
        if part.startswith(b"key="):
            return unquote_to_bytes(part[4:]).decode("latin-1"), QUERY_KEY
    return None, None


class Authenticator:
    """Checks keys against the store, with an in-process cache that any change to keys resets.

    The cache holds hashes, never secrets, and the comparison is constant-time whether the key
    came from the cache or the store.
    """

    def __init__(self, store: Store, on_change: Callable[[], None] | None = None) -> None:
        self._store = store
        self._on_change = on_change  # told when keys, limits or balances changed from outside
        self._cache: dict[str, Principal] = {}
        self._version = -1

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise GatewayError(Kind.AUTHENTICATION, "missing API key: send your buzz key as x-api-key or Bearer")
        match = _KEY_RE.fullmatch(token)
        if match is None:
            raise GatewayError(Kind.AUTHENTICATION, "invalid API key: not a buzz key")
        key_id, secret = match.groups()
        version = self._store.keys_version()
        if version != self._version:
            self._cache.clear()
            self._version = version
            if self._on_change is not None:
                self._on_change()
        principal = self._cache.get(key_id)
        if principal is None:
            principal = await self._load(key_id)
        record = principal.key
        if record is None or not hmac.compare_digest(record.secret_hash, hash_secret(secret)):
            raise GatewayError(Kind.AUTHENTICATION, "invalid API key")
        if not record.active:
            raise GatewayError(Kind.AUTHENTICATION, "API key has been revoked")
        return principal

    async def _load(self, key_id: str) -> Principal:
        try:
            record = await self._store.find_key(key_id)
            if record is None:
                return Principal(key_id, "")  # not cached: a key created later must be found
            project = await self._store.find_project(record.project)
        except StoreUnavailable as exc:
            # Never a 401: the key may well be good, and a client told it is bad stops retrying.
            raise GatewayError(Kind.UNAVAILABLE, "the key store is unreachable; try again shortly") from exc
        principal = self._cache[key_id] = Principal(
            record.id, record.project, record, project, charged_scopes(record, project)
        )
        return principal

    def vouches(self, token: str | None) -> bool:
        """Whether `token` is a live key this process already knows, checked without the store:
        what a throttled address may still use."""
        match = _KEY_RE.fullmatch(token) if token else None
        principal = self._cache.get(match[1]) if match else None
        record = principal.key if principal is not None else None
        return (
            match is not None
            and record is not None
            and record.active
            and hmac.compare_digest(record.secret_hash, hash_secret(match[2]))
        )

    def invalidate(self) -> None:
        """Forget every cached key and project: this process itself just changed one (its own
        writes do not move SQLite's data_version, which only counts other connections)."""
        self._version = -1

    @property
    def version(self) -> int:
        """The keys-and-limits version last seen; it moves when an operator changes either."""
        return self._version


class FailureThrottle:
    """Refused keys counted per client address, so one client cannot make buzz check keys for it
    without end: past `limit` refusals in `window` seconds, that address is turned away with a
    429 before any lookup, until its window ends.

    Windows are fixed, which is coarse but needs one entry per address; the table is bounded, and
    when full the address seen longest ago is forgotten first.
    """

    def __init__(
        self, limit: int = 30, window: float = 60.0, clock: Callable[[], float] = time.monotonic, size: int = 65536
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._size = size
        self._failures: dict[str, tuple[float, int]] = {}  # address -> (window start, refusals in it)

    @property
    def active(self) -> bool:
        return bool(self._failures)

    def wait(self, address: str) -> float | None:
        """Seconds until `address` may try again, or None if it may now."""
        if not self._failures:  # the usual case: nothing to look up
            return None
        entry = self._failures.get(address)
        if entry is None or entry[1] < self._limit:
            return None
        left = entry[0] + self._window - self._clock()
        if left <= 0:
            del self._failures[address]
            return None
        return left

    def refused(self, address: str) -> None:
        now = self._clock()
        start, count = self._failures.pop(address, (now, 0))
        if now - start >= self._window:
            start, count = now, 0
        if len(self._failures) >= self._size:
            del self._failures[next(iter(self._failures))]
        self._failures[address] = (start, count + 1)  # re-inserted: the table is ordered by last refusal
