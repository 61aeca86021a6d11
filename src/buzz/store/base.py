"""What buzz persists, as one Protocol each backend implements side by side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from buzz.billing.ledger import LedgerRow

GroupBy = Literal["model", "key", "user", "tag", "day", "project", "provider"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    project: str
    name: str | None
    secret_hash: bytes
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


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

    async def keys_version(self) -> int: ...

    def create_key(self, key_id: str, project: str, name: str | None, secret_hash: bytes) -> KeyRecord: ...

    def list_keys(self, project: str | None = None) -> list[KeyRecord]: ...

    def revoke_key(self, key_id: str) -> bool: ...

    def write_ledger(self, rows: Sequence[LedgerRow]) -> None: ...

    def usage(self, since: float, by: GroupBy) -> list[UsageLine]: ...

    def close(self) -> None: ...
