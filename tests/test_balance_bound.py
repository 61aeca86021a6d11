"""How far a prepaid balance can go below zero, tested at the edge of what reservations allow.

Before forwarding, a request reserves its true worst case against the balance: every body byte an
input token, and its output ceiling times the answers it asks for (`n`). A vendor that reports
exactly that worst case can never take the balance below zero, however many requests race; one
that reports more than it could have produced takes it below zero by that excess, and no more.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from buzz.billing.pricing import PriceBook
from buzz.billing.usage import Usage
from fakes.fake_server import FakeUpstream
from fakes.replies import Reply
from support import BuzzProcess

MODEL = "gpt-4.1-mini"  # $0.40 / $1.60 per million tokens
CEILING, CHOICES = 50, 2
BODY = json.dumps(
    {"model": MODEL, "n": CHOICES, "max_completion_tokens": CEILING, "messages": [{"role": "user", "content": "hi"}]}
).encode()
BALANCE = 10_000_000  # $0.01


def _answer(extra_output: int) -> FakeUpstream:
    """Reports as much usage as the request could have produced, plus `extra_output` tokens."""

    def reply(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Reply:
        usage = {"prompt_tokens": len(body), "completion_tokens": CEILING * CHOICES + extra_output}
        document = {"id": "chatcmpl-1", "object": "chat.completion", "model": MODEL, "choices": [], "usage": usage}
        return Reply(body=json.dumps(document).encode(), delay_before_headers=0.05)

    return FakeUpstream(reply, "openai")


async def _burst(url: str, key: str, count: int) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> int:
            headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
            async with session.post(f"{url}/v1/chat/completions", data=BODY, headers=headers) as response:
                await response.read()
                return response.status

        return list(await asyncio.gather(*(one() for _ in range(count))))


def _run(tmp_path: Path, extra_output: int) -> tuple[list[int], int, int]:
    """200 requests at once on a $0.01 balance: (statuses, final balance, sum of the ledger's costs)."""
    with _answer(extra_output) as fake:
        env = {"OPENAI_API_KEY": "sk-test", "BUZZ_OPENAI_BASE_URL": fake.url}
        with BuzzProcess(tmp_path / "data", fake.url, env=env) as process:
            project = f"prepaid-{uuid.uuid4().hex[:6]}"
            assert process.cli("projects", "create", project, "--prepaid").returncode == 0
            assert process.cli("balance", "add", project, "0.01").returncode == 0
            key = process.cli("keys", "create", "--project", project).stdout.strip()
            statuses = asyncio.run(_burst(process.url, key, 200))
            rows = process.ledger(count=200)
        balance = process.cli("balance", "add", project, "0").stdout.strip()
    spent = sum(row["cost_nanos"] or 0 for row in rows)
    return statuses, round(float(balance) * 1e9), spent


def _cost(input_tokens: int, output_tokens: int) -> int:
    cost = PriceBook().cost("openai", MODEL, Usage(input_tokens, output_tokens), time.time()).buzz_nanos
    assert cost is not None
    return cost


def test_a_vendor_reporting_the_most_each_reservation_allows_never_overdraws(tmp_path: Path) -> None:
    worst = _cost(len(BODY), CEILING * CHOICES)
    statuses, balance, spent = _run(tmp_path, extra_output=0)
    admitted = BALANCE // worst
    # Exactly as many as the worst case fits, whatever the order they raced in.
    assert statuses.count(200) == admitted and statuses.count(402) == 200 - admitted
    assert spent == admitted * worst
    assert balance == BALANCE - spent >= 0


def test_a_vendor_reporting_more_overdraws_by_that_excess_at_most(tmp_path: Path) -> None:
    worst = _cost(len(BODY), CEILING * CHOICES)
    excess = _cost(len(BODY), CEILING * CHOICES + 40) - worst
    statuses, balance, spent = _run(tmp_path, extra_output=40)
    admitted = statuses.count(200)
    assert admitted <= BALANCE // worst and statuses.count(402) == 200 - admitted
    assert spent == admitted * (worst + excess)
    assert balance == BALANCE - spent  # every nano accounted for
    # Below zero only by what vendors reported beyond the reservations of the admitted requests.
    assert balance >= -admitted * excess
