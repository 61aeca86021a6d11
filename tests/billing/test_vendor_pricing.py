"""OpenAI, Gemini and xAI costs to the nano-dollar, from each vendor's own usage JSON.

Usage goes through buzz's meter rules (so the vendor's token meanings are tested with the
price), then the price book. Rates are genai-prices 0.2.3's: $X per million tokens
is X * 1000 nanos per token. Every figure is cross-checked against genai-prices' own extractor
and `calc_price` on the same raw JSON.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import extract_usage
from genai_prices.data_snapshot import get_snapshot

from buzz.billing.pricing import Cost, PriceBook
from buzz.billing.usage import Usage
from buzz.config import PriceOverride as Override
from buzz.proxy.meter import Meter
from buzz.upstreams.google import GeminiUsage
from buzz.upstreams.openai import ChatUsage, ResponsesUsage

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


def metered(rules: ChatUsage | ResponsesUsage | GeminiUsage, doc: dict[str, Any]) -> Usage:
    meter = Meter(rules, "application/json", "")
    meter.feed(json.dumps(doc).encode())
    usage = meter.result(complete=True).usage
    assert usage is not None
    return usage


def chat(provider: str, model: str, usage: dict[str, Any]) -> Usage:
    return metered(ChatUsage(b"{}", model, provider), {"model": model, "choices": [], "usage": usage})


def gemini(model: str, usage: dict[str, Any]) -> Usage:
    return metered(GeminiUsage(b"{}", model), {"candidates": [{"finishReason": "STOP"}], "usageMetadata": usage})


def genai_nanos(provider: str, flavor: str, doc: dict[str, Any], when: datetime = NOW) -> Decimal:
    """genai-prices' own answer for the same JSON, in nanos."""
    extracted = extract_usage(doc, provider_id=provider, api_flavor=flavor)
    return extracted.calc_price(genai_request_timestamp=when).total_price * 10**9


def list_nanos(book: PriceBook, provider: str, model: str, usage: Usage, when: datetime = NOW) -> int | None:
    return book.cost(provider, model, usage, when).list_nanos


# --- OpenAI ------------------------------------------------------------------------------------

# gpt-5.5: $5 input, $30 output, $0.50 cached read; whole request 2x input / 1.5x output above 272k.
GPT_55_CACHED = {
    "prompt_tokens": 12_000,
    "completion_tokens": 2_000,
    "prompt_tokens_details": {"cached_tokens": 10_000},
    "completion_tokens_details": {"reasoning_tokens": 1_500},  # inside completion_tokens for OpenAI
}


def test_gpt_5_5_with_cached_input_and_reasoning(book: PriceBook) -> None:
    usage = chat("openai", "gpt-5.5", GPT_55_CACHED)
    assert usage == Usage(input_tokens=2_000, output_tokens=2_000, cache_read_tokens=10_000)
    expected = 2_000 * 5_000 + 10_000 * 500 + 2_000 * 30_000
    assert expected == 75_000_000
    assert list_nanos(book, "openai", "gpt-5.5", usage) == expected
    assert genai_nanos("openai", "chat", {"model": "gpt-5.5", "usage": GPT_55_CACHED}) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # 272_000 prompt tokens (72k uncached + 200k cached): still the base rates
        (272_000, 72_000 * 5_000 + 200_000 * 500 + 1_000 * 30_000),
        # one more: every token at $10 / $1 / $45
        (272_001, 72_001 * 10_000 + 200_000 * 1_000 + 1_000 * 45_000),
        (300_000, 100_000 * 10_000 + 200_000 * 1_000 + 1_000 * 45_000),
    ],
)
def test_gpt_5_5_long_context_tier(book: PriceBook, prompt: int, expected: int) -> None:
    raw = {"prompt_tokens": prompt, "completion_tokens": 1_000, "prompt_tokens_details": {"cached_tokens": 200_000}}
    usage = chat("openai", "gpt-5.5", raw)
    assert list_nanos(book, "openai", "gpt-5.5", usage) == expected
    assert genai_nanos("openai", "chat", {"model": "gpt-5.5", "usage": raw}) == expected


# gpt-5.6 (an alias of gpt-5.6-sol) since 2026-08-21: $4 / $20, read $0.40, cache write $5 (1.25x).
GPT_56_WRITES = {
    "prompt_tokens": 10_000,
    "completion_tokens": 500,
    "prompt_tokens_details": {"cached_tokens": 4_000, "cache_write_tokens": 5_000},
}


def test_gpt_5_6_with_cache_writes(book: PriceBook) -> None:
    usage = chat("openai", "gpt-5.6", GPT_56_WRITES)
    assert usage == Usage(input_tokens=1_000, output_tokens=500, cache_write_5m_tokens=5_000, cache_read_tokens=4_000)
    expected = 1_000 * 4_000 + 4_000 * 400 + 5_000 * 5_000 + 500 * 20_000
    assert expected == 40_600_000
    assert list_nanos(book, "openai", "gpt-5.6", usage) == expected
    assert list_nanos(book, "openai", "gpt-5.6-sol-2026-09-01", usage) == expected  # a dated snapshot
    assert genai_nanos("openai", "chat", {"model": "gpt-5.6", "usage": GPT_56_WRITES}) == expected
    # Before 2026-08-21 the same model listed $5 / $30, read $0.50, write $6.25.
    august = datetime(2026, 8, 1, tzinfo=UTC)
    before = 1_000 * 5_000 + 4_000 * 500 + 5_000 * 6_250 + 500 * 30_000
    assert before == 53_250_000
    assert list_nanos(book, "openai", "gpt-5.6", usage, august) == before
    assert genai_nanos("openai", "chat", {"model": "gpt-5.6", "usage": GPT_56_WRITES}, august) == before


def test_gpt_5_6_responses_shape_costs_the_same(book: PriceBook) -> None:
    raw = {
        "input_tokens": 10_000,
        "input_tokens_details": {"cached_tokens": 4_000, "cache_write_tokens": 5_000},
        "output_tokens": 500,
        "output_tokens_details": {"reasoning_tokens": 200},
    }
    usage = metered(ResponsesUsage(b"{}", "gpt-5.6-sol", "openai"), {"model": "gpt-5.6-sol", "usage": raw})
    assert list_nanos(book, "openai", "gpt-5.6-sol", usage) == 40_600_000
    assert genai_nanos("openai", "responses", {"model": "gpt-5.6-sol", "usage": raw}) == 40_600_000


def test_gpt_5_6_tier_applies_to_cache_writes_too(book: PriceBook) -> None:
    # 300k prompt: $8 input, $0.80 read, $10 write, $30 output
    raw = {"prompt_tokens": 300_000, "completion_tokens": 10, "prompt_tokens_details": {"cache_write_tokens": 100_000}}
    expected = 200_000 * 8_000 + 100_000 * 10_000 + 10 * 30_000
    assert list_nanos(book, "openai", "gpt-5.6-sol", chat("openai", "gpt-5.6-sol", raw)) == expected
    assert genai_nanos("openai", "chat", {"model": "gpt-5.6-sol", "usage": raw}) == expected


def test_openai_cache_writes_without_a_listed_price_cost_plain_input(book: PriceBook) -> None:
    # gpt-5.5 lists no write price: genai-prices (and OpenAI before GPT-5.6) bill writes as input.
    raw = {"prompt_tokens": 2_000, "completion_tokens": 0, "prompt_tokens_details": {"cache_write_tokens": 1_000}}
    assert list_nanos(book, "openai", "gpt-5.5", chat("openai", "gpt-5.5", raw)) == 2_000 * 5_000
    assert genai_nanos("openai", "chat", {"model": "gpt-5.5", "usage": raw}) == 2_000 * 5_000


def test_embeddings(book: PriceBook) -> None:
    assert list_nanos(book, "openai", "text-embedding-3-small", Usage(input_tokens=8)) == 8 * 20  # $0.02


# --- Gemini ------------------------------------------------------------------------------------

# gemini-2.5-pro: $1.25 / $10 / read $0.125; above 200k prompt tokens $2.50 / $15 / $0.25.


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        # 150k prompt of which 50k cached, 1k answer + 3k thoughts (billed as output)
        (
            {"promptTokenCount": 150_000, "cachedContentTokenCount": 50_000, "candidatesTokenCount": 1_000},
            100_000 * 1_250 + 50_000 * 125 + 4_000 * 10_000,
        ),
        # 250k prompt: the whole request at the higher rates
        (
            {"promptTokenCount": 250_000, "cachedContentTokenCount": 50_000, "candidatesTokenCount": 1_000},
            200_000 * 2_500 + 50_000 * 250 + 4_000 * 15_000,
        ),
        # exactly 200k: still the base tier
        (
            {"promptTokenCount": 200_000, "cachedContentTokenCount": 50_000, "candidatesTokenCount": 1_000},
            150_000 * 1_250 + 50_000 * 125 + 4_000 * 10_000,
        ),
        # tool-use prompt tokens are input, and count toward the threshold
        (
            {"promptTokenCount": 199_990, "toolUsePromptTokenCount": 20, "candidatesTokenCount": 1_000},
            200_010 * 2_500 + 4_000 * 15_000,
        ),
    ],
)
def test_gemini_2_5_pro_tiers(book: PriceBook, metadata: dict[str, int], expected: int) -> None:
    raw = {**metadata, "thoughtsTokenCount": 3_000}
    usage = gemini("gemini-2.5-pro", raw)
    assert usage.output_tokens == 1_000 + 3_000
    assert list_nanos(book, "google", "gemini-2.5-pro", usage) == expected
    assert genai_nanos("google", "default", {"modelVersion": "gemini-2.5-pro", "usageMetadata": raw}) == expected


def test_gemini_figures_by_hand() -> None:
    assert 100_000 * 1_250 + 50_000 * 125 + 4_000 * 10_000 == 171_250_000
    assert 200_000 * 2_500 + 50_000 * 250 + 4_000 * 15_000 == 572_500_000


def test_discount_applies_to_vendor_tiers() -> None:
    book = PriceBook(discount=Decimal("0.2"))
    usage = gemini("gemini-2.5-pro", {"promptTokenCount": 250_000, "cachedContentTokenCount": 50_000})
    cost = book.cost("google", "gemini-2.5-pro", usage, NOW)
    assert cost.list_nanos == 200_000 * 2_500 + 50_000 * 250
    assert cost.buzz_nanos == 200_000 * 2_000 + 50_000 * 200  # 0.8x


# --- xAI ---------------------------------------------------------------------------------------

# grok-4.3: $1.25 / $2.50 / read $0.20; at 200k prompt tokens and above $2.50 / $5 / $0.40.


def test_grok_4_3_reasoning_is_billed_on_top(book: PriceBook) -> None:
    raw = {
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
        "prompt_tokens_details": {"text_tokens": 1_000, "cached_tokens": 200},
        "completion_tokens_details": {"reasoning_tokens": 400},
    }
    usage = chat("xai", "grok-4.3", raw)
    assert usage == Usage(input_tokens=800, output_tokens=100 + 400, cache_read_tokens=200)
    expected = 800 * 1_250 + 200 * 200 + 500 * 2_500
    assert expected == 2_290_000
    assert list_nanos(book, "xai", "grok-4.3", usage) == expected
    assert list_nanos(book, "x-ai", "grok-4.3", usage) == expected  # genai-prices' spelling works too
    assert genai_nanos("x-ai", "chat", {"model": "grok-4.3", "usage": raw}) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (199_999, 199_999 * 1_250 + 500 * 2_500),
        (200_000, 200_000 * 2_500 + 500 * 5_000),  # "200k or more": the tier starts at 200_000 itself
    ],
)
def test_grok_4_3_long_context(book: PriceBook, prompt: int, expected: int) -> None:
    raw = {"prompt_tokens": prompt, "completion_tokens": 100, "completion_tokens_details": {"reasoning_tokens": 400}}
    assert list_nanos(book, "xai", "grok-4.3", chat("xai", "grok-4.3", raw)) == expected
    assert genai_nanos("x-ai", "chat", {"model": "grok-4.3", "usage": raw}) == expected


# --- which genai-prices match prices a request -------------------------------------------------

GPT_USAGE = Usage(input_tokens=100, output_tokens=10, cache_read_tokens=50)


@pytest.mark.parametrize(
    ("provider", "model", "priced_as"),
    [
        ("openai", "gpt-5.5", "gpt-5.5"),
        ("openai", "gpt-5.5-2026-04-23", "gpt-5.5"),  # listed snapshot
        ("openai", "gpt-5.6", "gpt-5.6-sol"),  # alias listed by equality
        ("openai", "gpt-5.6-terra-2026-10-01", "gpt-5.6-terra"),  # dated snapshot (genai-prices regex)
        ("openai", "gpt-4o-20241120", "gpt-4o"),  # compact date
        ("openai", "gpt-4-0613", "gpt-4"),
        ("openai", "GPT-5.5", "gpt-5.5"),
        ("google", "gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("google", "gemini-flash-latest", "gemini-3.8-flash"),
        ("xai", "grok-4.3-20260101", "grok-4.3"),
        ("xai", "grok-code-fast-1-0825", "grok-code-fast-1"),
    ],
)
def test_ids_and_their_snapshots(book: PriceBook, provider: str, model: str, priced_as: str) -> None:
    price = book.list_price(provider, model, NOW)
    assert price is not None
    assert (price.model, price.priced_as) == (model, priced_as)


@pytest.mark.parametrize(
    ("provider", "model", "genai_says"),
    [
        ("openai", "gpt-5.5-mini", None),
        ("openai", "gpt-5-nano-foo", "gpt-5-nano"),  # starts_with gpt-5-nano-
        ("google", "gemini-3.6-flash-lite", "gemini-3.6-flash"),  # starts_with gemini-3.6-flash
        ("google", "gemini-2.5-pro-ultra", "gemini-2.5-pro"),
        ("google", "claude-opus-4-9", None),  # no family default outside Anthropic
        ("xai", "grok-4.3-mini", None),
        ("nope", "gpt-5.5", None),
    ],
)
def test_unknown_ids_are_unpriced_not_misattributed(
    book: PriceBook, provider: str, model: str, genai_says: str | None
) -> None:
    assert book.cost(provider, model, GPT_USAGE, NOW) == Cost(None, None, book.version)
    assert book.list_price(provider, model, NOW) is None
    providers = {p.id: p for p in get_snapshot().providers}
    genai_provider = providers.get({"xai": "x-ai"}.get(provider, provider))
    if genai_provider is not None:  # what genai-prices' own prefix match would have billed
        found = genai_provider.find_model(model)
        assert (found.id if found else None) == genai_says


def test_override_prices_an_unknown_vendor_model() -> None:
    book = PriceBook(overrides={"gpt-5.5-mini": Override(input=Decimal(1), output=Decimal(2))})
    cost = book.cost("openai", "gpt-5.5-mini", GPT_USAGE, NOW)
    assert cost.list_nanos is None
    # Non-Claude cache lines fall back to the input rate (genai-prices' rule), not Claude's 0.1x.
    assert cost.buzz_nanos == 100 * 1_000 + 10 * 2_000 + 50 * 1_000
