"""What a request reserves against spend caps and balances: its true worst case, on every surface."""

from __future__ import annotations

import asyncio
import time

import pytest

from buzz.billing.pricing import PriceBook
from buzz.billing.usage import Usage
from buzz.errors import GatewayError
from buzz.limits.base import Scope
from buzz.limits.memory import MemoryLimiter
from buzz.proxy.admit import Admission
from buzz.proxy.route import read_head

NOW = time.time()
PRICES = PriceBook()
PROJECT = Scope("project", "p", prepaid=True)


def _drop(body: bytes, provider: str, model: str, window: int | None = None, billed: bool = True) -> int:
    """How much one reservation takes from a large prepaid balance."""
    limiter = MemoryLimiter()

    async def go() -> int:
        await limiter.add_balance("p", 10**15)
        admission = Admission(limiter, PRICES, lambda model: window)
        await admission.reserve([PROJECT], provider, model, body, read_head(body, model_required=False), NOW, billed)
        return 10**15 - await limiter.balance("p")

    return asyncio.run(go())


def _cost(provider: str, model: str, input_tokens: int, output_tokens: int) -> int:
    cost = PRICES.buzz_nanos(provider, model, Usage(input_tokens, output_tokens), NOW)
    assert cost is not None
    return cost


def test_the_answers_asked_for_multiply_the_ceiling() -> None:
    chat = b'{"model":"gpt-4.1-mini","n":3,"max_completion_tokens":40,"messages":[]}'
    assert read_head(chat).choices == 3
    assert _drop(chat, "openai", "gpt-4.1-mini") == _cost("openai", "gpt-4.1-mini", len(chat), 120)
    gemini = b'{"contents":[],"generationConfig":{"maxOutputTokens":40,"candidateCount":2}}'
    assert read_head(gemini, model_required=False).choices == 2
    assert _drop(gemini, "google", "gemini-2.5-flash") == _cost("google", "gemini-2.5-flash", len(gemini), 80)
    for odd in (b'{"model":"m","n":true}', b'{"model":"m","n":0}', b'{"model":"m","n":"2"}'):
        assert read_head(odd).choices == 1


def test_no_ceiling_reserves_the_context_window_and_says_so_when_refused() -> None:
    body = b'{"model":"gpt-4.1-mini","messages":[]}'
    assert _drop(body, "openai", "gpt-4.1-mini", window=100_000) == _cost("openai", "gpt-4.1-mini", len(body), 100_000)
    limiter = MemoryLimiter()

    async def refused() -> str:
        await limiter.add_balance("p", 1_000)
        admission = Admission(limiter, PRICES, lambda model: 100_000)
        with pytest.raises(GatewayError) as raised:
            await admission.reserve([PROJECT], "openai", "gpt-4.1-mini", body, read_head(body), NOW)
        return raised.value.message

    message = asyncio.run(refused())
    assert "prepaid balance" in message and "no output ceiling" in message and "max_tokens" in message


def test_count_tokens_reserves_no_money() -> None:
    body = b'{"model":"claude-haiku-4-5","messages":[]}'
    assert _drop(body, "anthropic", "claude-haiku-4-5", billed=False) == 0
