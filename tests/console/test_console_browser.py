"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against a real
`buzz serve` and the fake Anthropic upstream.

The operator signs in, makes projects, a key and a console token; the key works through buzz,
then is revoked in one click and its confirm step, and its next request is a 401. A project's
member signs in at phone width and sees its own project only, whatever URL it types. No page
logs an error or trips the Content-Security-Policy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import ADMIN_TOKEN
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    expect,
    sync_playwright,
)

from buzz.console.present import usd
from fakes.fake_anthropic import FakeAnthropic
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
# Runs before any page script, outside the page's CSP: reports every violation to the test.
WATCH_CSP = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.buzzTestViolation(`${event.effectiveDirective} blocked ${event.blockedURI} at ${event.sourceFile}`);
});
"""

# An inline script, added the way an injected one would be; resolves to the directive it broke.
INLINE_SCRIPT = """() => new Promise((resolve) => {
  document.addEventListener("securitypolicyviolation", (event) => resolve(event.effectiveDirective), {once: true});
  const script = document.createElement("script");
  script.textContent = "document.title = 'ran'";
  document.body.appendChild(script);
})"""


class Problems:
    """Everything a page must not do: log an error or warning, fail a request, break the CSP."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.expected_statuses: set[tuple[int, str]] = set()

    def watch(self, context: BrowserContext) -> None:
        context.expose_function("buzzTestViolation", lambda text: self.found.append(f"CSP violation: {text}"))
        context.add_init_script(WATCH_CSP)
        context.on("page", self._page)

    def _page(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.found.append(f"page error: {error}"))
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium logs each error status it loads; a 404 the test asked for is no fault.
        url = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and any(u == url for _, u in self.expected_statuses):
            return
        if message.type in ("error", "warning"):
            self.found.append(f"console {message.type}: {message.text} ({message.location})")

    def _failed(self, request: Request) -> None:
        # A load the browser dropped because the page moved on (a click that navigates) is no
        # fault; an answer that is one shows up as its status, in `_response`.
        if request.failure != "net::ERR_ABORTED":
            self.found.append(f"failed {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and (response.status, response.url) not in self.expected_statuses:
            self.found.append(f"{response.status} {response.url}")


@pytest.fixture
def buzz(tmp_path: Path, fake: FakeAnthropic) -> Iterator[BuzzProcess]:
    with BuzzProcess(tmp_path / "data", fake.url, env={"BUZZ_ADMIN_TOKEN": ADMIN_TOKEN}) as process:
        yield process


def _call(buzz: BuzzProcess, key: str, model: str = "claude-haiku-4-5", tags: str = "") -> int:
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": key, **({"x-buzz-tags": tags} if tags else {})}
    return raw_post(buzz.url, "/v1/messages", json.dumps(body).encode(), headers)[0]


def _sign_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/console/keys")
    expect(page).to_have_url(f"{url}/console/sign-in")  # no session: sent to sign in
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}/console/usage")  # the console's home


def _create_project(page: Page, url: str, name: str, prepaid: bool = False) -> None:
    page.goto(f"{url}/console/projects")
    page.get_by_label("Name", exact=True).fill(name)
    if prepaid:
        page.get_by_label("Prepaid").check()
    page.get_by_label("Spend a month, USD").fill("250")
    page.get_by_role("button", name="Create project").click()
    expect(page).to_have_url(f"{url}/console/projects/{name}?done=project-created")


def _create_key(page: Page, url: str, project: str, name: str) -> str:
    page.goto(f"{url}/console/keys/new")
    page.get_by_label("Project").select_option(project)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Requests a minute").fill("600")
    page.get_by_label("Spend a day, USD").fill("20")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("created")
    return page.locator("#secret").inner_text()


def _shot(page: Page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG")
    # Nothing wider than the window: tables scroll inside their own box.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], (name, width)  # type: ignore[index]


# Counts the pixels of the chart's first series' colour (#1f5fbf): bars were drawn, not just axes.
PAINTED = """() => {
  const canvas = document.querySelector("#usage-chart canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] === 31 && data[i + 1] === 95 && data[i + 2] === 191) count++;
  }
  return count;
}"""


def _reports(browser: Browser, problems: Problems, buzz: BuzzProcess, key: str, shots: Path) -> None:
    """The report pages at 1280x900, on requests of three models, two of them tagged."""
    for model, tags in (
        ("claude-sonnet-4-6", "feature=search"),
        ("claude-sonnet-4-6", "feature=chat"),
        ("claude-opus-4-6", ""),
    ):
        assert _call(buzz, key, model, tags) == 200
    url = buzz.url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    problems.watch(context)
    page = context.new_page()
    _sign_in(page, url, ADMIN_TOKEN)
    legend = page.locator("#usage-chart .u-legend")
    for model in ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"):
        expect(legend).to_contain_text(model)
    assert page.evaluate(PAINTED) > 100
    _shot(page, shots, "usage")
    page.get_by_label("Split by").select_option("tag:feature")
    page.get_by_label("Chart").select_option("requests")
    page.get_by_role("button", name="Show").click()
    # Only what was chosen goes into the URL: empty filters are left out.
    expect(page).to_have_url(f"{url}/console/usage?range=7d&tz=UTC&by=tag%3Afeature&metric=requests")
    expect(legend).to_contain_text("search")
    page.goto(f"{url}/console/features")
    expect(page.locator("#figures")).to_contain_text("chat")
    assert page.evaluate(PAINTED) > 100
    _shot(page, shots, "features")
    page.goto(f"{url}/console/cache")
    expect(page.locator("#cache")).to_contain_text("claude-sonnet-4-6")
    _shot(page, shots, "cache")
    page.goto(f"{url}/console/keys")
    # What the live key's daily cap has left: $20 less the cost of its requests.
    key_id = key.split("-")[1]
    spent = sum(row["cost_nanos"] for row in buzz.ledger() if row["key_id"] == key_id)
    headroom = page.locator(f'#keys tr[data-key="{key_id}"] .headroom')
    expect(headroom).to_contain_text(f"{usd(20 * 10**9 - spent)} left")
    _shot(page, shots, "keys")
    context.close()


def test_the_console_in_chromium(buzz: BuzzProcess, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    url = buzz.url
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems = Problems()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            laptop = browser.new_context(viewport={"width": 1280, "height": 860})
            laptop.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
            problems.watch(laptop)
            page = laptop.new_page()
            page.goto(f"{url}/console/sign-in")
            _shot(page, shots, "sign-in")
            _sign_in(page, url, ADMIN_TOKEN)
            expect(page.locator(".who")).to_contain_text("the operator")

            _create_project(page, url, "acme")
            _create_project(page, url, "globex", prepaid=True)
            page.get_by_label("Amount, USD").fill("25.75")
            page.get_by_role("button", name="Add to balance").click()
            expect(page.locator("#balance")).to_have_text("$25.75")
            _shot(page, shots, "project")

            acme_key = _create_key(page, url, "acme", "web app")
            page.get_by_role("button", name="Copy").click()
            expect(page.get_by_role("button", name="Copied")).to_be_visible()
            assert page.evaluate("navigator.clipboard.readText()") == acme_key
            _shot(page, shots, "key-created")
            globex_key = _create_key(page, url, "globex", "reporting")
            acme_id, globex_id = acme_key.split("-")[1], globex_key.split("-")[1]
            assert _call(buzz, acme_key) == 200  # a key made in the console works

            page.goto(f"{url}/console/tokens")
            page.get_by_label("Project").last.select_option("acme")
            page.get_by_label("Name", exact=True).fill("acme finance")
            page.get_by_role("button", name="Create console token").click()
            member_token = page.locator("#secret").inner_text()
            assert member_token.startswith("buzzc-")

            page.goto(f"{url}/console/keys")
            expect(page.locator("#keys tbody tr")).to_have_count(2)
            _shot(page, shots, "keys-operator")
            page.locator(f'tr[data-key="{acme_id}"]').get_by_role("link", name="Revoke").click()
            dialog = page.locator("#confirm-dialog")
            expect(dialog).to_be_visible()
            expect(dialog).to_contain_text(f"Revoke key {acme_id} (web app)?")
            _shot(page, shots, "revoke-confirm")
            dialog.get_by_role("button", name="Revoke key").click()
            expect(page).to_have_url(f"{url}/console/keys?done=key-revoked")
            expect(page.locator(f'tr[data-key="{acme_id}"] .status')).to_have_text("revoked")
            assert _call(buzz, acme_key) == 401  # refused from its very next request
            assert _call(buzz, globex_key) == 200
            _reports(browser, problems, buzz, globex_key, shots)

            phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            problems.watch(phone)
            member = phone.new_page()
            _sign_in(member, url, member_token)
            expect(member.locator(".who")).to_contain_text("acme")
            expect(member.locator("#figures")).to_contain_text("claude-haiku-4-5")  # its key's request
            _shot(member, shots, "usage-member-phone")
            member.goto(f"{url}/console/keys")
            expect(member.get_by_role("link", name="Projects")).to_have_count(0)
            expect(member.locator("#keys tbody tr")).to_have_count(1)
            expect(member.locator(f'tr[data-key="{acme_id}"]')).to_be_visible()
            _shot(member, shots, "keys-member-phone")
            # Typing another project's URLs shows nothing of it.
            member.goto(f"{url}/console/keys?project=globex")
            expect(member.locator("#keys tbody tr")).to_have_count(1)
            assert globex_id not in member.content() and "globex" not in member.content()
            for path in (f"/console/keys/{globex_id}", "/console/projects/globex", "/console/projects"):
                problems.expected_statuses.add((404, f"{url}{path}"))
                answer = member.goto(f"{url}{path}")
                assert answer is not None and answer.status == 404, path
                expect(member.get_by_role("heading", level=1)).to_have_text("Not found")
                assert globex_id not in member.content()
            _shot(member, shots, "not-found-phone")
            member.goto(f"{url}/console/tokens")
            _shot(member, shots, "tokens-member-phone")
            member.get_by_role("button", name="Sign out").click()
            expect(member).to_have_url(f"{url}/console/sign-in")
            member.goto(f"{url}/console/keys")
            expect(member).to_have_url(f"{url}/console/sign-in")

            # The watch itself works: an inline script is refused, and reported to the test.
            before = len(problems.found)
            directive = page.evaluate(INLINE_SCRIPT)
            assert directive == "script-src-elem"
            deadline = time.monotonic() + 10
            while len(problems.found) == before and time.monotonic() < deadline:
                page.evaluate("1")  # each call lets the test take the page's reports
            assert any(p.startswith("CSP violation: script-src-elem blocked inline") for p in problems.found[before:])
            del problems.found[before:]
        finally:
            browser.close()
    assert problems.found == []
