"""What an operator may set on a key or a project: one typed definition for the CLI and the admin API.

Both front ends turn their input into these Structs (the admin API decodes JSON straight into
them; the CLI converts its options), so a value one of them refuses the other refuses too, and
nothing unchecked reaches the store. A field left out is unchanged (`UNSET`); `null` (the CLI's
`none`) removes a limit, an expiry or an allow-list. Each Struct knows the store columns it
changes, in the store's units: nano-dollars, unix seconds, a JSON list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from buzz.limits.base import Limits
from buzz.money import usd_to_nanos

Count = Annotated[int, Meta(ge=0, le=2**53)]
Usd = Decimal  # a limit: checked not negative, and to the nano-dollar, in __post_init__
# Project names appear in URLs of the admin API, in the ledger and in Redis keys.
ProjectName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Label = Annotated[str, Meta(max_length=200)]
AwareTime = Annotated[datetime, Meta(tz=True)]
# A model id or a glob pattern over ids (claude-*, gpt-5.?); never free text.
ModelPattern = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9.*?_:/@+\[\]!-]+$")]
ModelPatterns = Annotated[list[ModelPattern], Meta(min_length=1, max_length=256)]

T = TypeVar("T")
_COUNTS = ("rpm", "itpm", "otpm", "concurrency")
_MONEY = (("daily_usd", "daily_nanos"), ("monthly_usd", "monthly_nanos"))


class InvalidChange(ValueError):
    """Input that fails the definition; the message names the field."""


class LimitChanges(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    rpm: Count | UnsetType | None = UNSET
    itpm: Count | UnsetType | None = UNSET
    otpm: Count | UnsetType | None = UNSET
    concurrency: Count | UnsetType | None = UNSET
    daily_usd: Usd | UnsetType | None = UNSET
    monthly_usd: Usd | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        for name, _ in _MONEY:
            value = getattr(self, name)
            if isinstance(value, Decimal):
                try:
                    nanos = usd_to_nanos(value)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
                if nanos < 0:
                    raise ValueError(f"{name}: must not be negative")

    def limit_columns(self) -> dict[str, int | None]:
        columns: dict[str, int | None] = {}
        for name in _COUNTS:
            value = getattr(self, name)
            if value is not UNSET:
                columns[name] = value
        for name, column in _MONEY:
            value = getattr(self, name)
            if value is not UNSET:
                columns[column] = None if value is None else usd_to_nanos(value)
        return columns

    def limits(self) -> Limits:
        """The limits a new key or project starts with: what was given, the rest unlimited."""
        return Limits(**self.limit_columns())


class KeyChanges(LimitChanges):
    name: Label | UnsetType | None = UNSET
    expires_at: AwareTime | UnsetType | None = UNSET
    models: ModelPatterns | UnsetType | None = UNSET

    def columns(self) -> dict[str, object]:
        columns: dict[str, object] = dict(self.limit_columns())
        if self.name is not UNSET:
            columns["name"] = self.name
        if self.expires_at is not UNSET:
            columns["expires_unix"] = None if self.expires_at is None else unix_seconds(self.expires_at)
        if self.models is not UNSET:
            columns["allowed_models"] = self.models
        return columns


class NewKey(KeyChanges, kw_only=True):
    project: ProjectName

    def stored(self) -> tuple[Limits, int | None, list[str] | None]:
        """What `Store.create_key` takes beyond ids and names: limits, expiry, allow-list."""
        expires = None if isinstance(self.expires_at, UnsetType) or self.expires_at is None else self.expires_at
        models = None if isinstance(self.models, UnsetType) else self.models
        return self.limits(), None if expires is None else unix_seconds(expires), models


class ProjectChanges(LimitChanges):
    prepaid: bool | UnsetType = UNSET

    def columns(self) -> dict[str, object]:
        columns: dict[str, object] = dict(self.limit_columns())
        if self.prepaid is not UNSET:
            columns["prepaid"] = int(self.prepaid)
        return columns


class NewProject(ProjectChanges, kw_only=True):
    name: ProjectName


class NewConsoleToken(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Label | None = None  # a label for people: who or what the token is for


class BalanceChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    usd: Decimal  # negative corrects a balance

    def __post_init__(self) -> None:
        try:
            usd_to_nanos(self.usd)
        except ValueError as exc:
            raise ValueError(f"usd: {exc}") from None

    @property
    def nanos(self) -> int:
        return usd_to_nanos(self.usd)


def unix_seconds(moment: datetime) -> int:
    """Whole seconds, rounded up: a key never works past the moment it was told to stop."""
    seconds = moment.timestamp()
    return int(seconds) + (seconds > int(seconds))


def rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(seconds: float) -> str:
    """A short wait as people say it: "in 29 s", "in 4 min", "in 2 h"."""
    whole = max(0, round(seconds))
    if whole < 120:
        return f"in {whole} s"
    if whole < 7200:
        return f"in {whole // 60} min"
    return f"in {whole // 3600} h"


def decode(data: bytes, kind: type[T]) -> T:
    """A JSON document as `kind`; InvalidChange naming the field when it does not fit."""
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidChange(_explain(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidChange("request body is not valid JSON") from exc


def convert(values: dict[str, Any], kind: type[T]) -> T:
    """Command-line values (strings, None to remove) as `kind`, by the same rules as JSON."""
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidChange(_explain(exc)) from None


def _explain(error: msgspec.ValidationError) -> str:
    """msgspec says "Expected `int`, got `str` - at `$.rpm`"; people read "rpm: expected `int`, got `str`"."""
    text = str(error)
    message, _, where = text.rpartition(" - at `$.")
    if not message:
        return text
    field = where.rstrip("`")
    return f"{field}: {message[0].lower()}{message[1:]}"
