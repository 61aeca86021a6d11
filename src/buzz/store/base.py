"""What buzz persists, as one Protocol each backend implements side by side."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from buzz.billing.ledger import LedgerRow
from buzz.limits.base import BalanceStore, Limits, ScopeKind


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


# --- reports ----------------------------------------------------------------------------------
# The console, the admin API and `buzz usage` read aggregates from rollups the ledger writer keeps
# in the same transaction as the rows, at quarter-hour, hour and UTC-day spans: a quarter hour is
# fine enough for any time zone's hours and days (every UTC offset in use is a whole number of
# quarter hours), and the coarser spans keep long ranges quick.

BUCKET_SECONDS = 900  # the finest span: ranges are widened to whole quarter hours
# What a report can be split by. "tag" needs a tag key: it splits by that key's values.
# Two more for reports, not offered to users: "provider_model" (cache economics needs both, joined
# by \x1f) and "tag_key" (each request once per tag key it carries).
Dimension = Literal[
    "model", "provider", "key", "user", "tag", "project", "surface", "status", "provider_model", "tag_key"
]
DIMENSIONS: tuple[Dimension, ...] = ("model", "provider", "key", "user", "tag", "project", "surface", "status")


@dataclass(frozen=True, slots=True)
class Filters:
    """Which rows a report counts. `project` is forced to a member's own project by the callers."""

    project: str | None = None
    key_id: str | None = None
    model: str | None = None
    user_id: str | None = None
    tag: str | None = None  # a whole tag as sent, "feature=search"
    status_class: int | None = None  # 2, 4 or 5: the first digit of the status


@dataclass(slots=True)
class Totals:
    """Sums over a set of ledger rows. Cost sums skip unpriced rows, which `unpriced` counts."""

    requests: int = 0
    errors: int = 0  # status 400 and above, buzz's own refusals included
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    cost_nanos: int = 0
    list_cost_nanos: int = 0
    unpriced: int = 0  # rows with usage but no known price: shown as unpriced, never as $0
    estimated: int = 0  # rows whose usage buzz estimated because the vendor did not report it

    def add(self, other: Totals) -> None:
        # Field by field: a report adds tens of thousands of these, and a loop over the slots
        # with getattr and setattr costs three times as much.
        self.requests += other.requests
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_write_5m_tokens += other.cache_write_5m_tokens
        self.cache_write_1h_tokens += other.cache_write_1h_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cost_nanos += other.cost_nanos
        self.list_cost_nanos += other.list_cost_nanos
        self.unpriced += other.unpriced
        self.estimated += other.estimated

    def minus(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, name) - getattr(other, name) for name in Totals.__slots__))


@dataclass(frozen=True, slots=True)
class Bucketing:
    """Local hours or days: the store groups rows into buckets of `length` seconds of local time,
    local time being UTC plus the offset in force, from `offsets` (each a start, unix seconds,
    and the offset in seconds from then on; the first applies from before the range)."""

    length: Literal[3600, 86400]
    offsets: tuple[tuple[int, int], ...]

    def key(self, start: int, offset: int) -> int:
        """The bucket's key in `RollupLine.bucket` for a bucket starting at `start` (unix) under
        `offset`: an hour's UTC start (the hour repeated when summer time ends is two hours),
        or a day's number since 1970-01-01 in local time."""
        return (start + offset) // 86400 if self.length == 86400 else start


@dataclass(frozen=True, slots=True)
class RollupLine:
    bucket: int  # the local bucket's key (see `Bucketing.key`); 0 with no bucketing
    group: str  # the dimension's value; "" when the rows have none (no key, no user, no such tag)
    totals: Totals


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch created through buzz: whose it is, so its results bill the right key and project,
    and only that project can reach it."""

    id: str
    provider: str
    key_id: str
    project: str
    user_id: str | None
    tags: tuple[str, ...]
    created: float  # unix seconds


class Store(Protocol):
    """Keys and the ledger.

    Request-path reads are async so a networked backend fits the same shape; the embedded
    SQLite backend answers them without leaving the event loop, since an indexed read of a
    local file costs microseconds.
    """

    # The least time between two ledger writes: what one transaction costs beyond its rows
    # (round trips, the rollups' upkeep) decides it. The ledger writer merges batches until then.
    write_every: float

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

    async def record_batch(self, batch: BatchRecord) -> None:
        """Keep a batch's owner; recording the same id again changes nothing. The batch methods
        are async, as the key lookups are: a networked backend leaves the event loop for them."""
        ...

    async def find_batch(self, batch_id: str) -> BatchRecord | None: ...

    async def record_batch_file(self, file_id: str, batch_id: str) -> None:
        """A file that holds a batch's results (OpenAI's output file); the first record stands."""
        ...

    async def batch_of_file(self, file_id: str) -> str | None: ...

    async def claim_batch_results(self, batch_id: str, custom_ids: Sequence[str]) -> list[str]:
        """Of `custom_ids`, the ones never claimed before, now claimed: each result of a batch
        is billed once, however many processes fetch it, however many times."""
        ...

    def console_secret(self, candidate: bytes) -> bytes:
        """The secret that signs console sessions: the stored one, or `candidate` stored now if
        there is none yet (every process on the database then agrees on the first one stored)."""
        ...

    def balances(self) -> BalanceStore:
        """Prepaid balances for the in-process limiter: read on the event loop, and changes
        written with the next ledger batch."""
        ...

    def spend_now(self) -> list[tuple[ScopeKind, str, int, int]]:
        """Each key's and project's spend this UTC day and month, from the ledger (to seed limits)."""
        ...

    def write_ledger(self, rows: Sequence[LedgerRow]) -> None:
        """Write a batch in one transaction, with the rollups and the balance changes. A row
        already written (same id and time) is not written or counted again, so a batch may be
        written again after any failure."""
        ...

    def ledger_rows(self) -> list[dict[str, object]]:
        """Every row, as column -> value (times as stored text, tags as a JSON list); for tests."""
        ...

    # Report queries are synchronous and may take a while on a big ledger: callers on the event
    # loop run them in a thread. They read the rollups, except the exports and the questions no
    # rollup holds (a user or a tag with another dimension), whose cost `raw_rows` tells first.

    def rollup(
        self,
        since: int,
        until: int,
        filters: Filters,
        by: Dimension | None,
        tag_key: str | None = None,
        bucketing: Bucketing | None = None,
        only: Sequence[str] | None = None,
    ) -> list[RollupLine]:
        """Totals in [since, until) (multiples of BUCKET_SECONDS) per local bucket (one bucket, 0,
        without `bucketing`) and per value of `by` (one group, "", when `by` is None), for the
        values in `only` when it is given.
        `by="tag"` splits by the values of `tag_key`, leaving out rows without that key, or by
        whole tags when `tag_key` is None; a row counts under each of its tags."""
        ...

    def raw_rows(self, since: int, until: int, filters: Filters, by: Dimension | None) -> int:
        """0 when the rollups hold this question; otherwise how many ledger rows `rollup` walks to
        answer it (every row of the range in the scope it reads), so a caller can bound its work."""
        ...

    def tag_keys(self, since: int, until: int, project: str | None) -> list[str]:
        """The tag keys seen in the range ("feature" for `feature=search`), most used first."""
        ...

    def last_used(self, project: str | None) -> dict[str, float]:
        """Key id -> unix seconds of its latest ledger row."""
        ...

    def export_rows(
        self, since: int, until: int, project: str | None, after: tuple[float, str] | None
    ) -> Iterator[list[LedgerRow]]:
        """The ledger rows in [since, until), oldest first (by time, then id), in batches, after
        the row (ts, id) when resuming. Reads in constant memory, on its own connection."""
        ...

    def export_lines(
        self,
        since: int,
        until: int,
        project: str | None,
        after: tuple[float, str] | None,
        fmt: Literal["csv", "jsonl"],
        offsets: Sequence[tuple[int, int, str]],
    ) -> Iterator[bytes]:
        """`export_rows` rendered as `buzz.export.encode` renders them (CSV lines without the
        header, or JSON lines), by the database where it can: times in local time, under
        `offsets` (each a start in unix seconds, the offset in seconds from then on, and its
        label, "+05:30"; the first applies from before the range)."""
        ...

    def prune_ledger(self, before: float, limit: int) -> int:
        """Delete at most `limit` ledger rows older than `before`; the rollups keep their sums."""
        ...

    def ping(self) -> None:
        """Raises StoreUnavailable when the database cannot be reached (readiness)."""
        ...

    def close(self) -> None: ...


class StoreUnavailable(Exception):
    """The store could not be reached (a networked database that is down or unreachable): a
    request that needs it is answered 503, never as if a key were unknown."""
