"""`/api/pricing` and `/models`, read as a customer would, checked against what buzz bills.

A request priced by hand from the published rates must cost exactly what its ledger row says,
and the HTML page must render in a real browser (Debian's Chromium, driven by Playwright).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Request, Response, sync_playwright

from fakes.fake_anthropic import FakeAnthropic, Reply, message_json, usage_dict
from support import BuzzProcess, raw_post

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DISCOUNT = Decimal("0.2")
# Every kind of token, in amounts that are not round, so no rate can hide behind another.
USAGE = usage_dict(1237, 611, cache_write_5m=1009, cache_write_1h=2003, cache_read=50021)
RATE_OF = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_write_5m": "ephemeral_5m_input_tokens",
    "cache_write_1h": "ephemeral_1h_input_tokens",
    "cache_read": "cache_read_input_tokens",
}


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic) -> Iterator[BuzzProcess]:
    """buzz with a 20% discount and all four vendors configured (only Anthropic is ever called)."""
    vendors = {
        "BUZZ_DISCOUNT": str(DISCOUNT),
        "OPENAI_API_KEY": "sk-openai-for-tests",
        "GEMINI_API_KEY": "gemini-key-for-tests",
        "XAI_API_KEY": "xai-key-for-tests",
        # Never reached: but if something did forward, it would stay on this machine.
        "BUZZ_OPENAI_BASE_URL": fake_session.url,
        "BUZZ_GOOGLE_BASE_URL": fake_session.url,
        "BUZZ_XAI_BASE_URL": fake_session.url,
    }
    with BuzzProcess(tmp_path_factory.mktemp("public") / "data", fake_session.url, env=vendors) as process:
        yield process


def _get(url: str, accept: str | None = None) -> tuple[str, bytes]:
    request = urllib.request.Request(url, headers={"accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["content-type"], response.read()


def _get_json(url: str, accept: str | None = None) -> Any:
    content_type, body = _get(url, accept)
    assert content_type == "application/json"
    return json.loads(body)


def _tokens(usage: Mapping[str, Any]) -> dict[str, int]:
    cache = usage["cache_creation"]
    return {rate: int(cache[name] if name.startswith("ephemeral") else usage[name]) for rate, name in RATE_OF.items()}


def _published_cost(base: Mapping[str, str], tiers: list[dict[str, Any]], usage: Mapping[str, Any]) -> int:
    """Nano-dollars for `usage` at published USD-per-million rates: X USD/1M tokens = 1000 X nanos a
    token, rounded once, half to even. A tier applies to the whole request once its total input
    (cached or not) exceeds the tier's threshold."""
    tokens = _tokens(usage)
    total_input = tokens["input"] + tokens["cache_write_5m"] + tokens["cache_write_1h"] + tokens["cache_read"]
    rates: Mapping[str, Any] = base
    for tier in tiers:  # ascending thresholds
        if total_input > tier["above_input_tokens"]:
            rates = tier
    nanos = sum((Decimal(rates[rate]) * 1000 * count for rate, count in tokens.items()), Decimal(0))
    return int(nanos.to_integral_value(rounding=ROUND_HALF_EVEN))


def _rows_of(process: BuzzProcess, upstream_request_id: str) -> list[dict[str, Any]]:
    return process.ledger(count=1, where=lambda row: row["upstream_request_id"] == upstream_request_id)


def test_published_prices_are_what_the_ledger_charges(public: BuzzProcess, fake: FakeAnthropic) -> None:
    pricing = _get_json(f"{public.url}/api/pricing")
    assert (pricing["currency"], pricing["unit"], pricing["discount"]) == ("USD", "per 1M tokens", "0.20")
    claude = [item for item in pricing["data"] if item["vendor"] == "anthropic"]
    assert {"claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5-20251001"} <= {item["id"] for item in claude}
    key = public.create_key(project="pricing")

    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [(item, USAGE) for item in claude]
    for item in claude:
        if item["buzz_tiers"]:  # also cross the first threshold, with cached tokens doing most of it
            threshold = item["buzz_tiers"][0]["above_input_tokens"]
            large = usage_dict(threshold // 4, 611, cache_write_5m=1009, cache_write_1h=2003, cache_read=threshold)
            cases.append((item, large))
    assert len(cases) > len(claude), "no tiered model left to check the tiers with"

    for n, (item, usage) in enumerate(cases):
        model, request_id = item["id"], f"req_pricing_{n}"
        # The list price less the discount, field by field, is what is published as buzz's price.
        for rate in RATE_OF:
            assert Decimal(item["buzz"][rate]) == Decimal(item["list"][rate]) * (1 - DISCOUNT), (model, rate)
        fake.enqueue(Reply(body=message_json(model, "x", usage), headers=[("request-id", request_id)]))
        body = json.dumps({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
        assert raw_post(public.url, "/v1/messages", body.encode(), {"x-api-key": key})[0] == 200
        [row] = _rows_of(public, request_id)
        assert (row["model"], row["usage_source"]) == (model, "reported")
        assert row["price_version"] == pricing["price_version"]
        assert row["cost_nanos"] == _published_cost(item["buzz"], item["buzz_tiers"], usage), model
        assert row["list_cost_nanos"] == _published_cost(item["list"], item["list_tiers"], usage), model
    assert not fake.pending_replies


def test_models_json_lists_every_routable_model(public: BuzzProcess) -> None:
    document = _get_json(f"{public.url}/models", accept="application/json")
    models = {entry["id"]: entry for entry in document["data"]}
    assert document["object"] == "list" and len(models) == len(document["data"])  # no duplicates
    assert {entry["vendor"] for entry in models.values()} == {"anthropic", "openai", "google", "xai"}

    opus, sonnet, haiku = models["claude-opus-4-8"], models["claude-sonnet-4-6"], models["claude-haiku-4-5-20251001"]
    assert (opus["vendor"], opus["family"]) == ("anthropic", "opus")
    assert (sonnet["vendor"], sonnet["family"]) == ("anthropic", "sonnet")
    assert (haiku["vendor"], haiku["family"], haiku["aliases"]) == ("anthropic", "haiku", ["claude-haiku-4-5"])
    assert haiku["context_window"] == 200_000
    for entry in (opus, sonnet):
        assert isinstance(entry["context_window"], int) and entry["context_window"] >= 200_000
    assert all(e["vendor"] == "anthropic" for e in models.values() if e["id"].startswith("claude-"))
    assert {"gpt-5.5", "gemini-2.5-pro", "grok-4.3"} <= set(models)
    # Everything with a published price is a listed model.
    assert {item["id"] for item in _get_json(f"{public.url}/api/pricing")["data"]} <= set(models)
    # People (and anything that does not ask for JSON) get the page.
    assert _get(f"{public.url}/models")[0].startswith("text/html")
    assert _get(f"{public.url}/models", accept="text/html,application/json;q=0.9")[0].startswith("text/html")


def test_models_page_in_headless_chromium(public: BuzzProcess, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    listed = _get_json(f"{public.url}/models", accept="application/json")["data"]
    pricing = {item["id"]: item for item in _get_json(f"{public.url}/api/pricing")["data"]}
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text} ({message.location})")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"{response.status} {response.url}")

    def on_failed(request: Request) -> None:
        problems.append(f"failed {request.url}: {request.failure}")

    screenshot = tmp_path / "models.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("response", on_response)
            page.on("requestfailed", on_failed)
            response = page.goto(f"{public.url}/models", wait_until="load")
            assert response is not None and response.status == 200
            assert page.title() == "buzz: models and prices"
            assert page.get_by_role("heading", level=1).inner_text() == "Models buzz routes"

            rows = page.locator("#models tbody tr")
            assert rows.count() == len(listed)
            assert page.locator("#models caption").inner_text().startswith(f"{len(listed)} models")
            opus = page.locator('#models tr[data-model="claude-opus-4-8"]')
            assert opus.is_visible()
            cells = opus.locator("td").all_inner_texts()
            assert cells[:2] == ["claude-opus-4-8", "Anthropic"]
            rates = pricing["claude-opus-4-8"]["buzz"]
            assert cells[5:7] == [rates["input"], rates["output"]]  # the same figures as /api/pricing
            assert page.locator('#models tr[data-model="claude-haiku-4-5-20251001"] td').nth(3).inner_text() == (
                "claude-haiku-4-5"
            )
            # The table fits the page: no column pushed off to the right.
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1280, width
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000
