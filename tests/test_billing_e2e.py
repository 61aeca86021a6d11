"""Money through the real gateway: cache-aware usage in, nano-dollar costs in the ledger out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.fake_anthropic import FakeAnthropic, Reply, message_json, text_stream_events
from support import BuzzProcess, raw_post

CONFIG = """
[pricing]
discount = "0.2"

[pricing.models."claude-haiku-4-5-20251001"]
input = "0.50"
output = "2.50"
"""

# List prices in USD per million tokens (genai-prices' Claude rates) -> nano-dollars per token (x 1000).
LIST = {
    "claude-opus-4-8": {"in": 5000, "out": 25000, "w5m": 6250, "w1h": 10000, "read": 500},
    "claude-sonnet-4-6": {"in": 3000, "out": 15000, "w5m": 3750, "w1h": 6000, "read": 300},
    "claude-haiku-4-5-20251001": {"in": 1000, "out": 5000, "w5m": 1250, "w1h": 2000, "read": 100},
}

USAGE = {
    "input_tokens": 1234,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 50000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 777,
}


@pytest.fixture
def priced(tmp_path: Path, fake_session: FakeAnthropic) -> Iterator[BuzzProcess]:
    config = tmp_path / "buzz.toml"
    config.write_text(CONFIG)
    with BuzzProcess(tmp_path / "data", fake_session.url, env={"BUZZ_CONFIG": str(config)}) as process:
        fake_session.clear()
        yield process


def _list_cost(model: str) -> int:
    p = LIST[model]
    return 1234 * p["in"] + 1000 * p["w5m"] + 2000 * p["w1h"] + 50000 * p["read"] + 777 * p["out"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", list(LIST))
def test_cache_writes_reads_and_plain_tokens_to_the_nano_dollar(
    priced: BuzzProcess, fake_session: FakeAnthropic, model: str, stream: bool
) -> None:
    key = priced.create_key()
    request_id = f"req_bill_{model}_{stream}"
    if stream:
        start = USAGE | {"output_tokens": 1}
        final = {k: v for k, v in USAGE.items() if k != "cache_creation"}
        reply = Reply(
            chunks=text_stream_events(model, ["x"], start, final, pad=True), headers=[("request-id", request_id)]
        )
    else:
        reply = Reply(body=message_json(model, "x", USAGE), headers=[("request-id", request_id)])
    fake_session.enqueue(reply)
    body = f'{{"model":"{model}","max_tokens":999,"stream":{str(stream).lower()},"messages":[]}}'.encode()
    assert raw_post(priced.url, "/v1/messages", body, {"x-api-key": key})[0] == 200
    [row] = priced.ledger(count=1, where=lambda r: r["upstream_request_id"] == request_id)
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (1234, 777, 50000)
    assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (1000, 2000)
    assert row["list_cost_nanos"] == _list_cost(model)
    if model == "claude-haiku-4-5-20251001":
        # Override: $0.50 / $2.50, caches by the same multipliers as Haiku's list (1.25x, 2x, 0.1x).
        expected = 1234 * 500 + 1000 * 625 + 2000 * 1000 + 50000 * 50 + 777 * 2500
    else:
        expected = _list_cost(model) * 8 // 10  # 20% below list; these figures divide exactly
    assert row["cost_nanos"] == expected
    assert row["price_version"].startswith("genai-prices") and "discount 0.20" in row["price_version"]
