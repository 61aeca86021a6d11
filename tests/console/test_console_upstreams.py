"""The upstream credentials' state where the operator reads it: the admin API, `buzz upstreams`
and the console's Upstreams page, against a real `buzz serve` whose Anthropic pool has two
credentials on two fake upstreams, one of which has just answered a 429.

A project's member sees none of it: the page is a 404 to its session, the link is not in its
navigation, and its console token opens no admin route.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from console_support import ADMIN_TOKEN, Client
from playwright.sync_api import Page, expect, sync_playwright
from test_console_browser import CHROMIUM, CHROMIUM_ARGS, Problems

from buzz import console_tokens
from buzz.cli_upstreams import COLUMNS
from fakes.anthropic_replies import error_reply
from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, raw_post, wait_until

HOLD = 30  # the 429's retry-after, in seconds


@dataclass
class Pool:
    buzz: BuzzProcess
    first: FakeAnthropic  # acct-a's upstream
    second: FakeAnthropic  # acct-b's upstream
    held: str  # the credential that answered 429
    healthy: str


def _config(path: Path, first: FakeAnthropic, second: FakeAnthropic) -> Path:
    path.write_text(
        "[[providers.anthropic.credentials]]\n"
        'name = "acct-a"\n'
        'api_key = "sk-ant-first-account"\n'
        f'base_url = "{first.url}"\n'
        "[[providers.anthropic.credentials]]\n"
        'name = "acct-b"\n'
        'api_key = "sk-ant-second-account"\n'
        f'base_url = "{second.url}"\n'
        "weight = 2\n"
    )
    return path


def _call(buzz: BuzzProcess, key: str) -> int:
    body = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    return raw_post(buzz.url, "/v1/messages", json.dumps(body).encode(), {"x-api-key": key})[0]


def _messages(fake: FakeAnthropic) -> int:
    return sum(request.path.startswith("/v1/messages") for request in fake.requests)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    with FakeAnthropic() as first, FakeAnthropic() as second:
        env = {
            "ANTHROPIC_API_KEY": "",  # the variable would replace the configured pool
            "BUZZ_CONFIG": str(_config(tmp_path / "buzz.toml", first, second)),
            "BUZZ_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        with BuzzProcess(tmp_path / "data", first.url, env=env) as buzz:
            key = buzz.create_key(project="acme")
            # Either upstream answers 429 to its next request, whichever the pool picks first; the
            # reply the other did not use is taken back.
            first.enqueue(error_reply(429, "rate_limit_error", "Number of requests exceeded", retry_after=HOLD))
            second.enqueue(error_reply(429, "rate_limit_error", "Number of requests exceeded", retry_after=HOLD))
            assert _call(buzz, key) == 429  # relayed as the vendor sent it
            held, healthy = ("acct-a", "acct-b") if _messages(first) else ("acct-b", "acct-a")
            (second if held == "acct-a" else first).drain_replies()
            assert _messages(first) + _messages(second) == 1
            assert _call(buzz, key) == 200  # the held credential is skipped: this one went to the other
            assert _messages(first if healthy == "acct-a" else second) == 1
            yield Pool(buzz, first, second, held, healthy)


def _admin(buzz: BuzzProcess, token: str = ADMIN_TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(f"{buzz.url}/admin/api/upstreams", headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _by_name(document: Any) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in document["data"]}


def _seconds_from_now(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() - time.time()


def test_the_admin_api_shows_the_held_credential(pool: Pool) -> None:
    status, document = _admin(pool.buzz)
    assert status == 200
    credentials = _by_name(document)
    assert set(credentials) == {"acct-a", "acct-b"}
    held, healthy = credentials[pool.held], credentials[pool.healthy]
    assert held["provider"] == "anthropic"
    assert (held["state"], held["cause"]) == ("held", "rate_limited")
    assert 0 < _seconds_from_now(held["until"]) <= HOLD + 1
    assert held["cooldowns"]["rate_limited"] == 1
    assert held["in_flight"] == 0
    assert (healthy["state"], healthy["cause"], healthy["until"]) == ("healthy", None, None)
    assert sum(healthy["cooldowns"].values()) == 0
    assert (credentials["acct-a"]["weight"], credentials["acct-b"]["weight"]) == (1, 2)
    assert credentials["acct-a"]["base_url"] == pool.first.url
    assert "sk-ant" not in json.dumps(document)  # never a key
    # A project's console token is no operator token.
    store = pool.buzz.store()
    made = console_tokens.generate()
    store.create_console_token(made.token_id, "acme", "member", made.secret_hash)
    store.close()
    assert _admin(pool.buzz, made.token)[0] == 401
    assert _admin(pool.buzz, "not-the-operator-token")[0] == 401


def test_buzz_upstreams_prints_both_credentials_and_why_one_is_held(pool: Pool) -> None:
    buzz = pool.buzz
    # With no --url it asks the configuration's host and port, as the gateway was started with.
    done = _cli(buzz, {"BUZZ_PORT": str(buzz.port)})
    assert done.returncode == 0, done.stderr
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in done.stdout.splitlines() if "│" in line]
    rows = {row[1]: dict(zip(COLUMNS, row, strict=True)) for row in cells}
    assert set(rows) == {"acct-a", "acct-b"}, done.stdout
    held, healthy = rows[pool.held], rows[pool.healthy]
    assert held["vendor"] == "anthropic"
    assert held["state"].startswith("held until ") and held["state"].endswith(" s)"), done.stdout
    assert (held["cause"], held["cooldowns"]) == ("rate_limited", "rate_limited 1"), done.stdout
    assert (healthy["state"], healthy["cause"], healthy["cooldowns"]) == ("healthy", "", "none"), done.stdout
    assert "sk-ant" not in done.stdout

    as_json = buzz.cli("upstreams", "--url", buzz.url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    credentials = _by_name(json.loads(as_json.stdout))
    assert (credentials[pool.held]["state"], credentials[pool.held]["cause"]) == ("held", "rate_limited")
    assert credentials[pool.healthy]["state"] == "healthy"


def test_buzz_upstreams_says_when_the_gateway_refuses_its_token(pool: Pool) -> None:
    done = _cli(pool.buzz, {"BUZZ_ADMIN_TOKEN": "an-old-operator-token"}, "--url", pool.buzz.url)
    assert done.returncode != 0
    assert f"the gateway at {pool.buzz.url} refused the admin token" in done.stderr
    assert done.stdout == ""


def _cli(buzz: BuzzProcess, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "buzz", "upstreams", *args],
        env={**buzz.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _sign_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/console/upstreams")
    expect(page).to_have_url(f"{url}/console/sign-in")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}/console/usage")


def _shot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG")
    # Nothing wider than the window: the table scrolls inside its own box.
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]  # type: ignore[index]


def test_the_console_shows_the_operator_every_credential(pool: Pool, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    url = pool.buzz.url
    problems = Problems()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            laptop = browser.new_context(viewport={"width": 1280, "height": 800})
            problems.watch(laptop)
            page = laptop.new_page()
            _sign_in(page, url, ADMIN_TOKEN)
            page.get_by_role("link", name="Upstreams").click()
            expect(page).to_have_url(f"{url}/console/upstreams")
            expect(page.get_by_role("link", name="Upstreams")).to_have_attribute("aria-current", "page")
            vendor = page.locator('#upstreams tbody[data-vendor="anthropic"]')
            expect(vendor.locator("tr.vendor")).to_contain_text("Anthropic · 1 of 2 in rotation")
            expect(vendor.locator("tr[data-credential]")).to_have_count(2)
            held = page.locator(f'#upstreams tr[data-credential="{pool.held}"]')
            healthy = page.locator(f'#upstreams tr[data-credential="{pool.healthy}"]')
            expect(held.locator(".credential")).to_contain_text("weight 2" if pool.held == "acct-b" else "weight 1")
            expect(held.locator(".status")).to_have_text("held")
            expect(held.locator(".cause")).to_contain_text("rate limited")
            expect(held.locator(".state")).to_contain_text("until ")
            expect(held.locator('.cooldowns li[data-cause="rate_limited"]')).to_contain_text("1")
            expect(healthy.locator(".status")).to_have_text("healthy")
            expect(healthy.locator(".cooldowns")).to_have_text("none")
            expect(page.locator("#upstreams-summary")).to_contain_text("1 out of rotation")
            assert "sk-ant" not in page.content()
            _shot(page, tmp_path / "upstreams.png")

            phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            problems.watch(phone)
            small = phone.new_page()
            _sign_in(small, url, ADMIN_TOKEN)
            small.goto(f"{url}/console/upstreams")
            expect(small.locator("#upstreams tr[data-credential]")).to_have_count(2)
            _shot(small, tmp_path / "upstreams-phone.png")
        finally:
            browser.close()
    assert problems.found == []


def test_a_project_member_never_sees_the_upstreams(pool: Pool) -> None:
    store = pool.buzz.store()
    made = console_tokens.generate()
    store.create_console_token(made.token_id, "acme", "acme team", made.secret_hash)
    store.close()
    member = Client(pool.buzz.url)
    assert member.sign_in(made.token).status == 303
    keys = member.get("/console/keys")
    assert keys.status == 200
    assert "/console/upstreams" not in keys.body  # not in its navigation
    page = member.get("/console/upstreams")
    assert page.status == 404
    assert "acct-a" not in page.body and "acct-b" not in page.body
    # The operator's session, for contrast, gets the page.
    operator = Client(pool.buzz.url)
    assert operator.sign_in(ADMIN_TOKEN).status == 303
    shown = operator.get("/console/upstreams")
    assert shown.status == 200
    assert "acct-a" in shown.body and "acct-b" in shown.body
    assert '<a href="/console/upstreams" aria-current="page">Upstreams</a>' in shown.body


def test_a_disabled_credential_shows_why_and_its_next_probe(pool: Pool) -> None:
    upstream = pool.first if pool.healthy == "acct-a" else pool.second
    refused = error_reply(401, "authentication_error", "invalid x-api-key")
    # The first refusal disables it; the second answers the probe sent at once, so it stays so.
    upstream.enqueue(refused, refused)
    key = pool.buzz.create_key(project="acme")
    assert _call(pool.buzz, key) == 401
    assert wait_until(lambda: any(request.path.startswith("/v1/models") for request in upstream.requests))
    assert wait_until(lambda: upstream.pending_replies == 0)
    credential = _by_name(_admin(pool.buzz)[1])[pool.healthy]
    assert (credential["state"], credential["cause"]) == ("disabled", "auth")
    assert credential["until"] is not None  # when it is probed next: its pool has another credential
    operator = Client(pool.buzz.url)
    assert operator.sign_in(ADMIN_TOKEN).status == 303
    page = operator.get("/console/upstreams")
    assert page.status == 200
    row = page.body[page.body.index(f'data-credential="{pool.healthy}"') :]
    row = row[: row.index("</tr>")]
    assert 'data-state="disabled"' in row
    assert '<span class="status disabled">disabled</span>' in row
    assert "<strong>key refused</strong>: the vendor refused the key" in row
    assert "next probe " in row
    assert "2 out of rotation" in page.body
    assert 'Anthropic <span class="muted">· 0 of 2 in rotation</span>' in " ".join(page.body.split())
    done = pool.buzz.cli("upstreams", "--url", pool.buzz.url)
    line = next(line for line in done.stdout.splitlines() if f" {pool.healthy} " in line)
    assert "disabled, next probe " in line and "auth" in line, done.stdout
