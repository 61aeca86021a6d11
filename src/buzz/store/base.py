"""What buzz persists, as one Protocol each backend implements side by side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from buzz.billing.ledger import LedgerRow
from buzz.limits.base import Limits

GroupBy = Literal["model", "key", "user", "tag", "day", "project", "provider"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    project: str
    name: str | None
    secret_hash: bytes
    created_at: str
    revoked_at: str | None
    limits: Limits = field(default_factory=Limits)
    expires_at: int | None = None  # unix seconds; the key is refused from then on
    allowed_models: tuple[str, ...] | None = None  # ids or glob patterns; None = every model

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    name: str
    limits: Limits
    prepaid: bool
    balance_nanos: int
    created_at: str


@dataclass(frozen=True, slots=True)
class ConsoleTokenRecord:
    id: str
    project: str
    name: str | None
    secret_hash: bytes
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class UsageLine:
    group: str
    requests: int
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    cost_nanos: int
    list_cost_nanos: int
    unpriced: int  # rows whose cost is unknown: shown, never counted as zero
    estimated: int  # rows whose usage was estimated, not reported by the vendor


class Store(Protocol):
    """Keys and the ledger.

    Request-path reads are async so a networked backend fits the same shape; the embedded
    SQLite backend answers them without leaving the event loop, since an indexed read of a
    local file costs microseconds.
    """

    async def find_key(self, key_id: str) -> KeyRecord | None: ...

    def keys_version(self) -> int:
        """A number that moves whenever keys, projects or their limits change, read on every
        request, so it must not wait: a networked store would keep it current from its change
        notifications and answer from memory."""
        ...

    async def find_project(self, name: str) -> ProjectRecord | None: ...

    def project(self, name: str) -> ProjectRecord | None:
        """`find_project` for callers outside the event loop (the CLI)."""
        ...

    def create_key(
        self,
        key_id: str,
        project: str,
        name: str | None,
        secret_hash: bytes,
        limits: Limits = ...,
        expires_at: int | None = None,
        allowed_models: Sequence[str] | None = None,
    ) -> KeyRecord: ...

    def update_key(self, key_id: str, changes: dict[str, object]) -> KeyRecord | None:
        """`changes` are store columns, as `buzz.changes.KeyChanges.columns()` gives them."""
        ...

    def save_project(self, name: str, changes: dict[str, object], create: bool) -> ProjectRecord: ...

    def list_projects(self) -> list[ProjectRecord]: ...

    def add_balance(self, project: str, nanos: int) -> int: ...

    def list_keys(self, project: str | None = None) -> list[KeyRecord]: ...

    def revoke_key(self, key_id: str) -> bool: ...

    def create_console_token(
        self, token_id: str, project: str, name: str | None, secret_hash: bytes
    ) -> ConsoleTokenRecord: ...

    def find_console_token(self, token_id: str) -> ConsoleTokenRecord | None: ...

    def list_console_tokens(self, project: str | None = None) -> list[ConsoleTokenRecord]: ...

    def revoke_console_token(self, token_id: str) -> bool: ...

    def console_secret(self, candidate: bytes) -> bytes:
        """The secret that signs console sessions: the stored one, or `candidate` stored now if
        there is none yet (every process on the database then agrees on the first one stored)."""
        ...

    def write_ledger(self, rows: Sequence[LedgerRow]) -> None: ...

    def usage(self, since: float, by: GroupBy) -> list[UsageLine]: ...

    def close(self) -> None: ...
