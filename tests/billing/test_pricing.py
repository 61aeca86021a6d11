"""Costs to the nano-dollar. Every expected figure is worked by hand from the genai-prices 0.2.3
price table (genai-prices' Claude rates): $X per million tokens is X * 1000 nanos per token."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price

from buzz.billing.pricing import Cost, PriceBook, Rates
from buzz.billing.usage import Usage
from buzz.config import PriceOverride as Override

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MIXED = Usage(
    input_tokens=100,
    output_tokens=500,
    cache_write_5m_tokens=1000,
    cache_write_1h_tokens=2000,
    cache_read_tokens=5000,
)

# nanos per token: input, output, 5m write (1.25x), 1h write (2x), read (0.1x)
# Opus 4.8   $5 / $25 / $6.25 / $10 / $0.50
# Sonnet 4.6 $3 / $15 / $3.75 / $6  / $0.30
# Haiku 4.5  $1 / $5  / $1.25 / $2  / $0.10


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


def list_nanos(book: PriceBook, model: str, usage: Usage, when: datetime = NOW) -> int | None:
    return book.cost("anthropic", model, usage, when).list_nanos


@pytest.mark.parametrize(
    ("model", "worked", "total"),
    [
        ("claude-opus-4-8", 1234 * 5_000 + 567 * 25_000, 6_170_000 + 14_175_000),
        ("claude-sonnet-4-6", 1234 * 3_000 + 567 * 15_000, 3_702_000 + 8_505_000),
        ("claude-haiku-4-5", 1234 * 1_000 + 567 * 5_000, 1_234_000 + 2_835_000),
    ],
)
def test_plain_input_and_output(book: PriceBook, model: str, worked: int, total: int) -> None:
    assert worked == total
    cost = book.cost("anthropic", model, Usage(input_tokens=1234, output_tokens=567), NOW)
    assert cost.list_nanos == total
    assert cost.buzz_nanos == total  # no discount configured


@pytest.mark.parametrize(
    ("model", "write_5m", "write_1h", "read"),
    [
        ("claude-opus-4-8", 10_000 * 6_250, 10_000 * 10_000, 10_000 * 500),
        ("claude-sonnet-4-6", 10_000 * 3_750, 10_000 * 6_000, 10_000 * 300),
        ("claude-haiku-4-5", 10_000 * 1_250, 10_000 * 2_000, 10_000 * 100),
    ],
)
def test_cache_lines(book: PriceBook, model: str, write_5m: int, write_1h: int, read: int) -> None:
    assert list_nanos(book, model, Usage(cache_write_5m_tokens=10_000)) == write_5m
    assert list_nanos(book, model, Usage(cache_write_1h_tokens=10_000)) == write_1h
    assert list_nanos(book, model, Usage(cache_read_tokens=10_000)) == read
    base = book.list_price("anthropic", model, NOW)
    assert base is not None
    rates = base.base
    assert rates.cache_write_5m == rates.input * Decimal("1.25")
    assert rates.cache_write_1h == rates.input * 2
    assert rates.cache_read == rates.input * Decimal("0.1")


@pytest.mark.parametrize(
    ("model", "worked", "total"),
    [
        # 100*5000 + 500*25000 + 1000*6250 + 2000*10000 + 5000*500
        ("claude-opus-4-8", 500_000 + 12_500_000 + 6_250_000 + 20_000_000 + 2_500_000, 41_750_000),
        # 100*3000 + 500*15000 + 1000*3750 + 2000*6000 + 5000*300
        ("claude-sonnet-4-6", 300_000 + 7_500_000 + 3_750_000 + 12_000_000 + 1_500_000, 25_050_000),
        # 100*1000 + 500*5000 + 1000*1250 + 2000*2000 + 5000*100
        ("claude-haiku-4-5", 100_000 + 2_500_000 + 1_250_000 + 4_000_000 + 500_000, 8_350_000),
    ],
)
def test_mixed_usage(book: PriceBook, model: str, worked: int, total: int) -> None:
    assert worked == total
    assert list_nanos(book, model, MIXED) == total


def test_agrees_with_genai_prices_calc_price(book: PriceBook) -> None:
    # genai-prices counts cached tokens inside input_tokens and needs the write total spelled out.
    theirs = calc_price(
        GenaiUsage(
            input_tokens=MIXED.total_input_tokens,
            output_tokens=500,
            cache_write_tokens=3000,
            cache_write_5m_tokens=1000,
            cache_write_1h_tokens=2000,
            cache_read_tokens=5000,
        ),
        model_ref="claude-sonnet-4-6",
        provider_id="anthropic",
        genai_request_timestamp=NOW,
    )
    assert theirs.total_price == Decimal("0.02505")
    assert list_nanos(book, "claude-sonnet-4-6", MIXED) == theirs.total_price * 10**9 == 25_050_000


def test_discount_is_exact() -> None:
    book = PriceBook(discount=Decimal("0.2"))
    cost = book.cost("anthropic", "claude-opus-4-8", MIXED, NOW)
    assert cost.list_nanos == 41_750_000
    assert cost.buzz_nanos == 33_400_000  # 41_750_000 * 0.8
    price = book.buzz_price("anthropic", "claude-opus-4-8", NOW)
    assert price is not None
    assert price.base == Rates(Decimal(4), Decimal(20), Decimal(5), Decimal(8), Decimal("0.4"))


def test_discount_rounds_once_half_even() -> None:
    # Opus 4.8 input at 0.3333 off: $5 * 0.6667 = $3.3335/Mtok = 3333.5 nanos per token.
    book = PriceBook(discount=Decimal("0.3333"))
    assert book.cost("anthropic", "claude-opus-4-8", Usage(input_tokens=1), NOW).buzz_nanos == 3334  # 3333.5 -> even
    # 3 tokens = 10000.5 -> 10000: rounding per token would give 3 * 3334 = 10002, half-up 10001.
    assert book.cost("anthropic", "claude-opus-4-8", Usage(input_tokens=3), NOW).buzz_nanos == 10_000
    # 5 tokens = 16667.5 -> 16668 (the even neighbour is above this time).
    assert book.cost("anthropic", "claude-opus-4-8", Usage(input_tokens=5), NOW).buzz_nanos == 16_668


def test_override_absolute_rates() -> None:
    book = PriceBook(
        discount=Decimal("0.2"),
        overrides={"claude-sonnet-4-6": Override(input=Decimal("2.5"), output=Decimal("12"))},
    )
    cost = book.cost("anthropic", "claude-sonnet-4-6", MIXED, NOW)
    assert cost.list_nanos == 25_050_000
    # input/output absolute; cache lines keep Sonnet's own multipliers on the overridden input
    # rate of $2.50: 5m 1.25x = 3125, 1h 2x = 5000, read 0.1x = 250 nanos per token.
    assert cost.buzz_nanos == 100 * 2_500 + 500 * 12_000 + 1000 * 3_125 + 2000 * 5_000 + 5000 * 250
    assert cost.buzz_nanos == 20_625_000


def test_override_discount_per_model() -> None:
    book = PriceBook(discount=Decimal("0.2"), overrides={"claude-haiku-4-5": Override(discount=Decimal("0.5"))})
    assert book.cost("anthropic", "claude-haiku-4-5", MIXED, NOW).buzz_nanos == 4_175_000  # 8_350_000 / 2
    # The override is keyed by the model it is priced as, so the dated snapshot gets it too.
    assert book.cost("anthropic", "claude-haiku-4-5-20251001", MIXED, NOW).buzz_nanos == 4_175_000
    assert book.cost("anthropic", "claude-opus-4-8", MIXED, NOW).buzz_nanos == 33_400_000  # book's 0.2


def test_override_prices_a_model_genai_prices_lacks() -> None:
    book = PriceBook(overrides={"house-model": Override(input=Decimal(1), output=Decimal(2))})
    cost = book.cost("anthropic", "house-model", MIXED, NOW)
    assert cost.list_nanos is None
    # 1000/2000 nanos per token, cache lines by the fallback multipliers: 1250, 2000, 100
    assert cost.buzz_nanos == 100 * 1_000 + 500 * 2_000 + 1000 * 1_250 + 2000 * 2_000 + 5000 * 100


def test_tiered_model_haiku_5_5(book: PriceBook) -> None:
    # Base $0.10/$0.50/read $0.01 = 100/500/10 nanos; whole request 5x once the prompt exceeds 100k.
    at_threshold = Usage(input_tokens=60_000, cache_read_tokens=40_000, output_tokens=1000)
    assert list_nanos(book, "claude-haiku-5-5", at_threshold) == 60_000 * 100 + 40_000 * 10 + 1000 * 500
    over = Usage(input_tokens=60_000, cache_read_tokens=40_001, output_tokens=1000)
    assert list_nanos(book, "claude-haiku-5-5", over) == 60_000 * 500 + 40_001 * 50 + 1000 * 2_500
    assert list_nanos(book, "claude-haiku-5-5", over) == 34_500_050
    # Cache writes count toward the threshold: 100_001 5m-write tokens at 5 x $0.125 = 625 nanos.
    assert list_nanos(book, "claude-haiku-5-5", Usage(cache_write_5m_tokens=100_001)) == 62_500_625
    price = book.list_price("anthropic", "claude-haiku-5-5", NOW)
    assert price is not None
    assert [t for t, _ in price.tiers] == [100_000]
    assert price.rates_for(100_000) == price.base
    assert price.rates_for(100_001).input == Decimal("0.5")


def test_tiers_survive_the_discount() -> None:
    book = PriceBook(discount=Decimal("0.2"))
    over = Usage(input_tokens=100_001)
    assert book.cost("anthropic", "claude-haiku-5-5", over, NOW).buzz_nanos == 100_001 * 400  # 500 * 0.8


def test_date_conditional_price(book: PriceBook) -> None:
    # Sonnet 4.6 billed >200k prompts at $6/$22.50 until 2026-03-13 (UTC), flat $3/$15 since.
    usage = Usage(input_tokens=300_000, output_tokens=1000)
    before = 300_000 * 6_000 + 1000 * 22_500
    after = 300_000 * 3_000 + 1000 * 15_000
    assert (before, after) == (1_822_500_000, 915_000_000)
    assert list_nanos(book, "claude-sonnet-4-6", usage, datetime(2026, 3, 12, 23, 59, 59, tzinfo=UTC)) == before
    assert list_nanos(book, "claude-sonnet-4-6", usage, datetime(2026, 3, 13, tzinfo=UTC)) == after
    # The day is the UTC day: 01:00 on the 13th at +02:00 is still the 12th in UTC.
    plus_two = timezone(timedelta(hours=2))
    assert list_nanos(book, "claude-sonnet-4-6", usage, datetime(2026, 3, 13, 1, tzinfo=plus_two)) == before
    assert list_nanos(book, "claude-sonnet-4-6", usage, datetime(2026, 3, 13, 12)) == after  # naive = UTC
    # Below the threshold both eras agree.
    small = Usage(input_tokens=200_000)
    assert list_nanos(book, "claude-sonnet-4-6", small, datetime(2026, 1, 1, tzinfo=UTC)) == 200_000 * 3_000


@pytest.mark.parametrize(
    ("model", "priced_as", "input_rate", "output_rate"),
    [
        ("claude-opus-4-9", "claude-opus-4-8", "5", "25"),  # no price of its own: family default
        ("claude-opus-4-10", "claude-opus-4-8", "5", "25"),  # genai-prices' prefix match says Opus 4.1
        ("claude-opus-4-1-20250805", "claude-opus-4-1", "15", "75"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5", "5", "25"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "3", "15"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5", "1", "5"),
        ("claude-opus-4-20250514", "claude-opus-4-0", "15", "75"),  # Opus 4's own snapshot
        ("claude-opus-5-latest", "claude-opus-5", "5", "25"),
        ("claude-sonnet-4-7", "claude-sonnet-4-6", "3", "15"),
        ("claude-haiku-4-6-20261201", "claude-haiku-4-5", "1", "5"),
        ("claude-mythos-preview", "claude-mythos-5-2", "8", "40"),
        ("claude-fable-5-3", "claude-fable-5-2", "8", "40"),
    ],
)
def test_claude_family_fallback(book: PriceBook, model: str, priced_as: str, input_rate: str, output_rate: str) -> None:
    price = book.list_price("anthropic", model, NOW)
    assert price is not None
    assert (price.model, price.priced_as) == (model, priced_as)
    assert (price.base.input, price.base.output) == (Decimal(input_rate), Decimal(output_rate))


def test_family_default_from_opus_4_9_costs_like_opus_4_8(book: PriceBook) -> None:
    assert list_nanos(book, "claude-opus-4-9", MIXED) == 41_750_000


def test_family_defaults_are_configurable() -> None:
    book = PriceBook(family_defaults={"opus": "claude-opus-5-5"})
    price = book.list_price("anthropic", "claude-opus-4-9", NOW)
    assert price is not None
    assert (price.priced_as, price.base.input, price.base.output) == (
        "claude-opus-5-5",
        Decimal(4),
        Decimal(20),
    )
    assert book.list_price("anthropic", "claude-sonnet-9", NOW) is None  # no sonnet default now
    with pytest.raises(ValueError, match="family default"):
        PriceBook(family_defaults={"opus": "claude-opus-9-9"})


def test_unpriceable_model_is_none_not_zero(book: PriceBook) -> None:
    for provider, model in [
        ("anthropic", "gpt-x"),
        ("anthropic", "claude-unknown-1"),
        ("nope", "claude-opus-4-8"),
    ]:
        cost = book.cost(provider, model, MIXED, NOW)
        assert cost == Cost(None, None, book.version)
        assert book.list_price(provider, model, NOW) is None
        assert book.buzz_price(provider, model, NOW) is None


def test_version_names_data_discount_and_config() -> None:
    plain = PriceBook(discount=Decimal("0.2"))
    assert re.fullmatch(r"genai-prices 0\.2\.3; discount 0\.20; overrides [0-9a-f]{8}", plain.version)
    assert PriceBook(discount=Decimal("0.125")).version.split("; ")[1] == "discount 0.125"
    assert PriceBook(discount=Decimal("0.2")).version == plain.version  # stable
    five = PriceBook(overrides={"claude-opus-4-8": Override(input=Decimal("5"))})
    five_00 = PriceBook(overrides={"Claude-Opus-4-8": Override(input=Decimal("5.00"))})
    assert five.version == five_00.version  # same prices, same version
    assert five.version != PriceBook(overrides={"claude-opus-4-8": Override(input=Decimal("4"))}).version
    assert plain.version != PriceBook(discount=Decimal("0.2"), family_defaults={"opus": "claude-opus-5"}).version


def test_rejects_inexact_or_nonsense_configuration() -> None:
    with pytest.raises(ValueError):
        PriceBook(discount=0.2)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PriceBook(discount=Decimal("1.5"))
    with pytest.raises(ValueError):  # too many digits to stay exact
        PriceBook(discount=Decimal("0." + "3" * 40))
    with pytest.raises(ValueError):
        PriceBook(overrides={"claude-opus-4-8": Override(input=Decimal("-1"))})
    with pytest.raises(ValueError):
        Rates(Decimal("NaN"), Decimal(1), Decimal(1), Decimal(1), Decimal(1))
