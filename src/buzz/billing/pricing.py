"""Exact prices for a request, from genai-prices' bundled data, in integer nano-dollars.

genai-prices' own `calc_price` is correct but costs tens of microseconds a call, so it is used only
to *resolve* a model's rates, once per (provider, model, UTC day); the per-request arithmetic is a
handful of integer multiplications here. Prices are never fetched at run time: the data is whatever
genai-prices release is installed, and `PriceBook.version` names it on every ledger row.

Money is exact: rates are Decimal, each `Rates` keeps them as integers over one power of ten, and a
request's cost is rounded once (half to even) to whole nano-dollars (1 USD = 1_000_000_000 nanos).
"""

from __future__ import annotations

import decimal
import hashlib
import importlib.metadata
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple

from genai_prices import types as gp
from genai_prices.data_snapshot import get_snapshot

from buzz import providers
from buzz.billing.usage import Usage

# An override is written by the operator in the config file; it is priced here.
from buzz.config import PriceOverride as Override

# buzz provider id -> genai-prices provider id; genai-prices' own ids are accepted too.
GENAI_PROVIDERS: Mapping[str, str] = MappingProxyType(
    {**{p.price_id: p.price_id for p in providers.REGISTRY}, **{p.name: p.price_id for p in providers.REGISTRY}}
)

# What an unknown or newer Claude id is priced as: the newest current model of its family. The
# product brief's flagships, not genai-prices' newest entries, so that an unreleased id is billed
# like the model a customer most plausibly meant. Operators override this with `family_defaults`.
DEFAULT_FAMILIES: Mapping[str, str] = MappingProxyType(
    {
        "opus": "claude-opus-4-8",
        "sonnet": "claude-sonnet-4-6",
        "haiku": "claude-haiku-4-5",
        "fable": "claude-fable-5-2",
        "mythos": "claude-mythos-5-2",
    }
)

_CACHE_FIELDS = ("cache_write_5m", "cache_write_1h", "cache_read")
_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_GENAI_KEYS = ("input_mtok", "output_mtok", "cache_write_mtok", "cache_write_1h_mtok", "cache_read_mtok")
# Used only when genai-prices lists no price for a Claude cache line: Anthropic's published multipliers
# of the base input rate (5m write 1.25x, 1h write 2x, read 0.1x). Models whose own prices differ
# (Opus 5.5, Fable, Mythos, ...) list them, and their listed prices always win. Other vendors' missing
# cache lines cost what genai-prices charges for them: plain input (see `_rates`).
_FALLBACK_MULTIPLIERS = {
    "cache_write_5m": Decimal("1.25"),
    "cache_write_1h": Decimal("2"),
    "cache_read": Decimal("0.1"),
}
_NANOS_PER_TOKEN_EXP = 3  # $X per million tokens = X * 10**9 nanos / 10**6 tokens = X * 10**3 nanos/token
_MAX_DIGITS = 30  # significant digits in a configured rate or discount
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_CACHE_LIMIT = 4096  # model ids come from clients; bound what arbitrary ids can make us remember
_EMPTY_OVERRIDES: Mapping[str, Override] = MappingProxyType({})

_SNAPSHOT_SUFFIX = re.compile(r"(?:[-@](?:\d{8}|\d{4}-\d{2}-\d{2})|-latest)$")
_VERSION = r"(?P<ver>\d+(?:[-.]\d+)*)"
_NEW_STYLE = re.compile(rf"claude-(?P<family>[a-z]+)-{_VERSION}")  # claude-opus-4-1
_OLD_STYLE = re.compile(rf"claude-{_VERSION}-(?P<family>[a-z]+)")  # claude-3-5-sonnet
_NO_FAMILY = re.compile(rf"claude-{_VERSION}")  # claude-2
# A snapshot of an OpenAI, Gemini or Grok id: a date (-2025-04-14, -20250414, @20250414, Gemini's
# -05-20 and -09-2025), a numbered version (-001, OpenAI's -0613, xAI's -1212) or -latest.
_VENDOR_SNAPSHOT = re.compile(r"(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{2}-\d{2}|\d{2}-\d{4}|\d{3,4})|-latest)$")


def _exact_context() -> decimal.Context:
    # Rate arithmetic (discounts, fallbacks) must never round silently: trap instead.
    return decimal.Context(prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])


def _check_rate(name: str, value: object) -> None:
    # A float would carry binary noise into money; only Decimal is accepted.
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0 or _too_long(value):
        raise ValueError(f"{name} must be a finite, non-negative Decimal, got {value!r}")


def _too_long(value: Decimal) -> bool:
    # Bounded digits keep every product of configured numbers within _exact_context's precision, so
    # its Inexact trap can fire only here, at configuration time, never on the request path.
    return len(value.as_tuple().digits) > _MAX_DIGITS


def _div_half_even(n: int, d: int) -> int:
    q, r = divmod(n, d)  # floor division, so 0 <= r < d even for negative n
    if 2 * r > d or (2 * r == d and q % 2 == 1):
        q += 1
    return q


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for each kind of token."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    # The same rates as integer nanos-per-token * _divisor, so a request costs integer arithmetic only.
    _scaled: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _divisor: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = [getattr(self, name) for name in _FIELDS]
        for name, value in zip(_FIELDS, values, strict=True):
            _check_rate(name, value)
        exps = [int(v.as_tuple().exponent) + _NANOS_PER_TOKEN_EXP for v in values]
        shift = max(0, *(-e for e in exps))
        scaled = tuple(
            int("".join(map(str, v.as_tuple().digits))) * 10 ** (e + shift) for v, e in zip(values, exps, strict=True)
        )
        object.__setattr__(self, "_scaled", scaled)
        object.__setattr__(self, "_divisor", 10**shift)

    def nanos_for(self, usage: Usage) -> int:
        """The exact cost of `usage` at these rates, rounded once, half to even, to whole nanos."""
        i, o, w5, w1, r = self._scaled
        n = (
            usage.input_tokens * i
            + usage.output_tokens * o
            + usage.cache_write_5m_tokens * w5
            + usage.cache_write_1h_tokens * w1
            + usage.cache_read_tokens * r
        )
        return n if self._divisor == 1 else _div_half_even(n, self._divisor)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's rates on one day. A tier replaces the base rates for the WHOLE request once the
    request's total input tokens (cached or not) exceed its threshold (genai-prices' cliff model)."""

    model: str  # the id the client asked for
    priced_as: str  # the genai-prices model (or family default) whose prices these are
    base: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()  # ascending thresholds

    def rates_for(self, total_input_tokens: int) -> Rates:
        if not self.tiers:
            return self.base
        for threshold, rates in reversed(self.tiers):
            if total_input_tokens > threshold:
                return rates
        return self.base


def _check_override(model: str, override: Override) -> None:
    """Overrides come from the operator's file: refuse at start what could not be priced exactly."""
    for name in _FIELDS:
        if (value := getattr(override, name)) is not None:
            _check_rate(f"{model}.{name}", value)
    if override.discount is not None:
        _check_discount(override.discount)


_Prices = tuple[ModelPrice | None, ModelPrice | None]  # (list, buzz)


BATCH_FACTOR = Decimal("0.5")


def _times(price: ModelPrice, factor: Decimal) -> ModelPrice:
    """Every rate of `price` times `factor`, exactly."""
    with decimal.localcontext(_exact_context()):

        def scale(rates: Rates) -> Rates:
            return Rates(**{name: getattr(rates, name) * factor for name in _FIELDS})

        return ModelPrice(price.model, price.priced_as, scale(price.base), tuple((t, scale(r)) for t, r in price.tiers))


class Cost(NamedTuple):  # made for every request: a NamedTuple costs a third of a frozen dataclass
    """A request's cost in nano-dollars; None means the model could not be priced (never a silent 0)."""

    buzz_nanos: int | None
    list_nanos: int | None
    price_version: str


def _check_discount(discount: object) -> None:
    # A negative discount is a markup; above 1 would make buzz pay the customer.
    if not isinstance(discount, Decimal) or not discount.is_finite() or discount > 1 or _too_long(discount):
        raise ValueError(f"discount must be a finite Decimal <= 1, got {discount!r}")


def _claude_key(model_id: str) -> tuple[str | None, tuple[int, ...]] | None:
    """(family, version) of a Claude id, ignoring snapshot suffixes and trailing `.0`s, or None if
    the id is not of a recognised shape. claude-opus-4-1-20250805 -> ("opus", (4, 1))."""
    core = _SNAPSHOT_SUFFIX.sub("", model_id)
    family: str | None = None
    if m := _NEW_STYLE.fullmatch(core) or _OLD_STYLE.fullmatch(core):
        family = m["family"]
    elif not (m := _NO_FAMILY.fullmatch(core)):
        return None
    version = [int(part) for part in re.split(r"[-.]", m["ver"])]
    while len(version) > 1 and version[-1] == 0:
        version.pop()
    return family, tuple(version)


def _at(value: Any, threshold: int | None) -> Decimal | None:
    """A genai-prices price (plain, tiered or absent) as it applies above `threshold` (None = base)."""
    if not isinstance(value, gp.TieredPrices):
        return value if isinstance(value, Decimal) else None
    price: Decimal = value.base
    if threshold is not None:
        for tier in value.tiers:  # sorted ascending by genai-prices
            if tier.start <= threshold:
                price = tier.price
    return price


def _rates(values: Mapping[str, Decimal | None], claude: bool) -> Rates:
    base_input = values["input"]
    if base_input is None:
        raise ValueError("a price needs an input rate")
    # A model lists no output price only when it produces no output tokens (embeddings): 0 is exact.
    filled: dict[str, Decimal] = {"input": base_input, "output": values["output"] or Decimal(0)}
    for name in ("cache_write_5m", "cache_write_1h", "cache_read"):
        value = values[name]
        if value is not None:
            filled[name] = value
        elif claude:
            filled[name] = base_input * _FALLBACK_MULTIPLIERS[name]
        else:
            # genai-prices' own rule: a 1h write falls back to the write price, anything else to
            # input. OpenAI before GPT-5.6 charged cache writes as plain input, which this is.
            filled[name] = filled["cache_write_5m"] if name == "cache_write_1h" else base_input
    return Rates(**filled)


def _equal_names(clause: object) -> set[str]:
    """The ids a genai-prices match rule names outright (`equals`, possibly inside `or`)."""
    if isinstance(clause, gp.ClauseEquals):
        return {clause.equals.lower()}
    if isinstance(clause, gp.ClauseOr):
        return set().union(*(_equal_names(c) for c in clause.or_))
    return set()


def _names_model(ref: str, info: gp.ModelInfo) -> bool:
    """Whether a (non-Claude) genai-prices match of `ref` is one to bill by.

    genai-prices matches some families by prefix or substring (`starts_with: gemini-3.6-flash`), so
    a new variant such as a `gemini-3.6-flash-lite` would silently take its sibling's price. A match
    counts only if `ref`, or `ref` without a snapshot suffix (`_VENDOR_SNAPSHOT`), is the model's id
    or an id its rule lists by equality (aliases such as `gpt-5.6` -> gpt-5.6-sol). Otherwise the
    cost is unknown, and an operator who knows better adds an override.
    """
    names = _equal_names(info.match) | {info.id.lower()}
    return ref in names or _VENDOR_SNAPSHOT.sub("", ref) in names


def _from_genai(model: str, priced_as: str, price: gp.ModelPrice, claude: bool) -> ModelPrice | None:
    raw = {name: getattr(price, key, None) for name, key in zip(_FIELDS, _GENAI_KEYS, strict=True)}
    if _at(raw["input"], None) is None:
        return None  # nothing to anchor the price on; better unpriced than guessed
    thresholds = sorted(
        {tier.start for value in raw.values() if isinstance(value, gp.TieredPrices) for tier in value.tiers}
    )
    with decimal.localcontext(_exact_context()):
        base = _rates({name: _at(value, None) for name, value in raw.items()}, claude)
        tiers = tuple((t, _rates({name: _at(value, t) for name, value in raw.items()}, claude)) for t in thresholds)
    return ModelPrice(model, priced_as, base, tiers)


def _time_dependent(info: gp.ModelInfo) -> bool:
    # Off-peak prices (a time-of-day constraint) change within a day, so they defeat the daily cache.
    prices = info.prices if isinstance(info.prices, list) else []
    return any(isinstance(p.constraint, gp.TimeOfDateConstraint) for p in prices)


def _scaled(rate: Decimal, numerator: Decimal, denominator: Decimal) -> Decimal:
    """rate x numerator / denominator, exact when it can be, else to 1e-12 USD per million tokens."""
    try:
        return rate * numerator / denominator
    except decimal.Inexact:
        with decimal.localcontext() as context:
            context.prec = 40
            return (rate * numerator / denominator).quantize(Decimal("1e-12"))


def _canonical(value: Decimal) -> str:
    return format(value.normalize(), "f")  # 5, 5.0 and 5.00 are the same price and hash the same


class PriceBook:
    """List prices (genai-prices) and buzz prices (list minus a discount, or per-model overrides)."""

    def __init__(
        self,
        discount: Decimal = Decimal("0"),
        overrides: Mapping[str, Override] = _EMPTY_OVERRIDES,
        family_defaults: Mapping[str, str] | None = None,
    ) -> None:
        _check_discount(discount)
        self._discount = discount
        # Overrides match the requested id or the model it is priced as, case-insensitively.
        for model, override in overrides.items():
            _check_override(model, override)
        self._overrides = {model.lower(): override for model, override in overrides.items()}
        families = DEFAULT_FAMILIES if family_defaults is None else family_defaults
        self._families = {family.lower(): model.lower() for family, model in families.items()}
        # One snapshot for the book's lifetime, so prices cannot shift under a running process.
        self._snapshot = get_snapshot()
        self._providers = {p.id: p for p in self._snapshot.providers}
        self._cache: dict[tuple[str, str, int], _Prices] = {}  # (provider, model, UTC day)
        anthropic = self._providers["anthropic"]
        for family, model in self._families.items():
            if self._own_model(anthropic, model) is None:
                raise ValueError(f"family default {family}={model} has no price in genai-prices")
        self._version = self._make_version()

    @property
    def version(self) -> str:
        """Names the price data and configuration; stored on every ledger row."""
        return self._version

    def list_price(self, provider: str, model: str, when: datetime) -> ModelPrice | None:
        return self._prices(provider, model, when)[0]

    def buzz_price(self, provider: str, model: str, when: datetime) -> ModelPrice | None:
        return self._prices(provider, model, when)[1]

    def cost(self, provider: str, model: str, usage: Usage, when: datetime | float) -> Cost:
        """`when` is a datetime (naive means UTC) or unix seconds."""
        list_price, buzz_price = self._prices(provider, model, when)
        total = usage.total_input_tokens
        list_nanos = None if list_price is None else list_price.rates_for(total).nanos_for(usage)
        if buzz_price is list_price:  # no discount and no override for this model
            return Cost(list_nanos, list_nanos, self._version)
        buzz_nanos = None if buzz_price is None else buzz_price.rates_for(total).nanos_for(usage)
        return Cost(buzz_nanos, list_nanos, self._version)

    def batch_cost(self, provider: str, model: str, usage: Usage, when: datetime | float) -> Cost:
        """`cost` at the vendor's batch price: half of every rate, cache lines included, for list
        and buzz prices alike (Anthropic's, OpenAI's and Google's batch discount)."""
        list_price, buzz_price = self._prices(provider, model, when)
        total = usage.total_input_tokens
        list_nanos = None if list_price is None else _times(list_price, BATCH_FACTOR).rates_for(total).nanos_for(usage)
        if buzz_price is list_price:
            return Cost(list_nanos, list_nanos, self._version)
        buzz_nanos = None if buzz_price is None else _times(buzz_price, BATCH_FACTOR).rates_for(total).nanos_for(usage)
        return Cost(buzz_nanos, list_nanos, self._version)

    def buzz_nanos(self, provider: str, model: str, usage: Usage, when: datetime | float) -> int | None:
        """Only the buzz price of `cost`: what admission reserves, on every limited request."""
        buzz_price = self._prices(provider, model, when)[1]
        return None if buzz_price is None else buzz_price.rates_for(usage.total_input_tokens).nanos_for(usage)

    def _prices(self, provider: str, model: str, when: datetime | float) -> _Prices:
        # Cached per UTC day. The request path passes unix seconds: making a datetime for every
        # request would cost more than the lookup itself.
        if isinstance(when, datetime):
            if when.tzinfo is not None and when.tzinfo is not UTC:  # naive means UTC
                when = when.astimezone(UTC)
            day = when.date().toordinal() - _EPOCH_ORDINAL
        else:
            day = int(when // 86400)
        key = (provider, model, day)
        if (hit := self._cache.get(key)) is not None:
            return hit
        moment = when if isinstance(when, datetime) else datetime.fromtimestamp(when, UTC)
        list_price, cacheable = self._resolve_list(provider, model, moment)
        buzz_price = self._buzz(provider, model, list_price)
        if buzz_price is not None and buzz_price == list_price:
            buzz_price = list_price  # the same object: `cost` then works the figure out once
        prices = (list_price, buzz_price)
        if cacheable:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()  # crude, but bounded; the working set is a few dozen models
            self._cache[key] = prices
        return prices

    def _resolve_list(self, provider: str, model: str, when: datetime) -> tuple[ModelPrice | None, bool]:
        genai_provider = self._providers.get(GENAI_PROVIDERS.get(provider, ""))
        if genai_provider is None:
            return None, True
        ref = model.lower()
        claude = genai_provider.id == "anthropic"
        info = self._own_model(genai_provider, ref)
        # Only Claude has a family default: other vendors' unknown ids stay unpriced (cost unknown).
        if info is None and claude and ref.startswith("claude-"):
            family = next((w for w in re.split(r"[-.@]", ref) if w in self._families), None)
            if family is not None:
                info = self._own_model(genai_provider, self._families[family])
        if info is None:
            return None, True
        return _from_genai(model, info.id, info.get_prices(when), claude), not _time_dependent(info)

    def _own_model(self, provider: gp.Provider, ref: str) -> gp.ModelInfo | None:
        """The genai-prices model that prices `ref` as itself, or None.

        genai-prices matches Claude ids mostly by prefix, so claude-opus-4-10 would land on Opus 4.1
        ($15) and a future claude-opus-4-9 could land on an older Opus. A match counts only if it is
        the same id, or the same family and version once snapshot suffixes (-YYYYMMDD, @YYYYMMDD,
        -YYYY-MM-DD, -latest) are set aside; otherwise the caller falls back to the family default.
        Other vendors' ids are held to `_names_model`.
        """
        info = provider.find_model(ref, all_providers=self._snapshot.providers)
        if info is None or ref == info.id:
            return info
        if not ref.startswith("claude-"):
            return info if _names_model(ref, info) else None
        key = _claude_key(ref)
        return info if key is not None and key == _claude_key(info.id) else None

    def _buzz(self, provider: str, model: str, list_price: ModelPrice | None) -> ModelPrice | None:
        override = self._overrides.get(model.lower())
        if override is None and list_price is not None:
            override = self._overrides.get(list_price.priced_as)
        if list_price is None:
            return self._override_only(model, override, claude=provider == "anthropic")
        discount = self._discount if override is None or override.discount is None else override.discount
        absolute = {} if override is None else {n: v for n in _FIELDS if (v := getattr(override, n)) is not None}
        with decimal.localcontext(_exact_context()):
            factor = 1 - discount

            def apply(rates: Rates) -> Rates:
                values = {name: getattr(rates, name) * factor for name in _FIELDS}
                if "input" in absolute and rates.input:
                    # An overridden input rate carries the model's own cache multipliers with it,
                    # so caching keeps its shape at buzz's price.
                    for name in _CACHE_FIELDS:
                        values[name] = _scaled(absolute["input"], getattr(rates, name), rates.input)
                return Rates(**values | absolute)

            base = apply(list_price.base)
            tiers = tuple((t, apply(r)) for t, r in list_price.tiers)
        return ModelPrice(model, list_price.priced_as, base, tiers)

    @staticmethod
    def _override_only(model: str, override: Override | None, claude: bool) -> ModelPrice | None:
        # An operator may price a model genai-prices does not know; input and output are the minimum.
        if override is None or override.input is None or override.output is None:
            return None
        values = {name: getattr(override, name) for name in _FIELDS}
        with decimal.localcontext(_exact_context()):
            return ModelPrice(model, model, _rates(values, claude))

    def _make_version(self) -> str:
        try:
            data = f"genai-prices {importlib.metadata.version('genai-prices')}"
        except importlib.metadata.PackageNotFoundError:
            data = "genai-prices unknown"
        if self._snapshot.from_auto_update:  # someone installed genai-prices' live updater
            data += f" live {self._snapshot.timestamp:%Y-%m-%dT%H:%M}"
        normal = self._discount.normalize()
        shown = _canonical(normal) if int(normal.as_tuple().exponent) < -2 else f"{normal:.2f}"
        lines = [f"family {f}={m}" for f, m in sorted(self._families.items())]
        for model, o in sorted(self._overrides.items()):
            parts = [f"{n}={_canonical(v)}" for n in (*_FIELDS, "discount") if (v := getattr(o, n)) is not None]
            lines.append(f"override {model} {' '.join(parts)}")
        digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:8]
        return f"{data}; discount {shown}; overrides {digest}"
