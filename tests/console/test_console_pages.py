"""The console's forms over real HTTP: they change what the CLI and the admin API change, by the
same rules, and the running gateway applies each change from its next request."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from console_support import ADMIN_TOKEN, Client, ConsoleGateway, open_store

from fakes.fake_anthropic import FakeAnthropic
from support import UPSTREAM_KEY, Clock, raw_post, read_ledger, wait_until

KEY = re.compile(r'<code id="secret">(buzz-[a-z0-9]{12}-[A-Za-z0-9]{32})</code>')
TOKEN = re.compile(r'<code id="secret">(buzzc-[a-z0-9]{12}-[A-Za-z0-9]{32})</code>')


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic) -> Iterator[ConsoleGateway]:
    env = {
        "BUZZ_ADMIN_TOKEN": ADMIN_TOKEN,
        "ANTHROPIC_API_KEY": UPSTREAM_KEY,
        "BUZZ_ANTHROPIC_BASE_URL": fake_session.url,
    }
    with ConsoleGateway(tmp_path_factory.mktemp("console-pages") / "data", env, Clock(), Clock(1_800_000_000.0)) as gw:
        yield gw


@pytest.fixture(scope="module")
def operator(gateway: ConsoleGateway) -> Client:
    client = Client(gateway.url)
    assert client.sign_in(ADMIN_TOKEN).status == 303
    return client


def _call(gateway: ConsoleGateway, key: str, model: str) -> int:
    body = json.dumps({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    return raw_post(gateway.url, "/v1/messages", body.encode(), {"x-api-key": key})[0]


def test_projects_are_created_changed_and_topped_up(gateway: ConsoleGateway, operator: Client) -> None:
    made = operator.submit("/console/projects", {"name": "northwind", "prepaid": "on", "rpm": "120"})
    assert made.status == 303 and made.location == "/console/projects/northwind?done=project-created"
    again = operator.submit("/console/projects", {"name": "northwind"})
    assert again.status == 400 and "already exists" in again.body
    bad = operator.submit("/console/projects", {"name": "no spaces"})
    assert bad.status == 400 and "name:" in bad.body

    assert operator.submit("/console/projects/northwind/balance", {"usd": "12.50"}).status == 303
    assert operator.submit("/console/projects/northwind/balance", {"usd": "-0.0000015"}).status == 303
    page = operator.get("/console/projects/northwind?done=balance-added")
    assert '<dd id="balance">$12.4999985</dd>' in page.body  # exact: no float, no rounding to cents
    assert "The balance is updated." in page.body
    assert operator.submit("/console/projects", {"name": "overdrawn"}).status == 303
    assert operator.submit("/console/projects/overdrawn/balance", {"usd": "-1234.5"}).status == 303
    assert '<dd id="balance">-$1,234.50</dd>' in operator.get("/console/projects/overdrawn").body
    for amount, message in (("lots", "usd:"), ("0.0000000001", "more precision than a nano-dollar")):
        refused = operator.submit("/console/projects/northwind/balance", {"usd": amount})
        assert refused.status == 400 and message in refused.body, amount

    saved = operator.submit("/console/projects/northwind", {"rpm": "", "daily_usd": "5", "monthly_usd": "100.25"})
    assert saved.status == 303
    store = open_store(gateway.data_dir)
    try:
        project = store.project("northwind")
        assert project is not None and not project.prepaid  # the box was left unticked
        assert (project.limits.rpm, project.limits.daily_nanos, project.limits.monthly_nanos) == (
            None,
            5_000_000_000,
            100_250_000_000,
        )
    finally:
        store.close()
    listing = operator.get("/console/projects")
    row = re.search(r'<tr data-project="northwind">.*?</tr>', listing.body, re.S)
    assert row is not None and "$12.4999985" in row[0] and "$100.25" in row[0] and "$5.00" in row[0]


def test_a_key_made_in_the_console_works_and_its_changes_apply_at_once(
    gateway: ConsoleGateway, operator: Client, fake: FakeAnthropic
) -> None:
    operator.submit("/console/projects", {"name": "acme"})
    form = {
        "project": "acme",
        "name": "billing service",
        "rpm": "60",
        "daily_usd": "1.25",
        "expires": "2030-01-02T03:04",
        "models": "claude-haiku-*, claude-sonnet-4-6",
    }
    for field, value, message in (
        ("rpm", "lots", "rpm: expected `int"),
        ("daily_usd", "0.0000000001", "daily_usd: "),
        ("expires", "next tuesday", "expires: not a date"),
        ("models", "claude haiku<script>", "models"),
    ):
        refused = operator.submit("/console/keys", {**form, field: value})
        assert refused.status == 400 and message in refused.body, field
        assert "<script>" not in refused.body  # what was typed comes back escaped
    made = operator.submit("/console/keys", form)
    assert made.status == 200 and "shown this once" in made.body
    match = KEY.search(made.body)
    assert match is not None
    key = match[1]
    key_id = key.split("-")[1]
    store = open_store(gateway.data_dir)
    try:
        record = next(k for k in store.list_keys("acme") if k.id == key_id)
        assert record.name == "billing service"
        assert (record.limits.rpm, record.limits.daily_nanos) == (60, 1_250_000_000)
        assert record.expires_at == int(datetime(2030, 1, 2, 3, 4, tzinfo=UTC).timestamp())
        assert record.allowed_models == ("claude-haiku-*", "claude-sonnet-4-6")
        assert key not in operator.get("/console/keys").body  # the secret is shown once only
        assert key not in operator.get(f"/console/keys/{key_id}").body

        assert _call(gateway, key, "claude-sonnet-4-6") == 200
        edited = operator.submit(
            f"/console/keys/{key_id}", {"name": "billing service", "models": "claude-haiku-*", "expires": ""}
        )
        assert edited.status == 303 and edited.location == f"/console/keys/{key_id}?done=key-saved"
        assert _call(gateway, key, "claude-sonnet-4-6") == 403  # the gateway's very next request
        assert _call(gateway, key, "claude-haiku-4-5") == 200
        record = next(k for k in store.list_keys("acme") if k.id == key_id)
        assert record.limits.rpm is None and record.limits.daily_nanos is None and record.expires_at is None
        page = operator.get(f"/console/keys/{key_id}")
        assert 'value="claude-haiku-*"' in page.body and '<span class="muted">every model</span>' not in page.body
    finally:
        store.close()


def test_tokens_are_made_once_listed_and_a_member_manages_its_own(gateway: ConsoleGateway, operator: Client) -> None:
    operator.submit("/console/projects", {"name": "initech"})
    made = operator.submit("/console/tokens", {"project": "initech", "name": "finance"})
    assert made.status == 200
    match = TOKEN.search(made.body)
    assert match is not None
    token = match[1]
    assert token not in operator.get("/console/tokens").body

    member = Client(gateway.url)
    assert member.sign_in(token).status == 303
    keys = member.get("/console/keys")
    assert "Project <strong>initech</strong> · finance" in keys.body
    # A member makes keys in its own project, and tokens for its colleagues.
    key = KEY.search(member.submit("/console/keys", {"name": "from a member"}).body)
    assert key is not None
    assert _call(gateway, key[1], "claude-haiku-4-5") == 200
    colleague = TOKEN.search(member.submit("/console/tokens", {"name": "colleague"}).body)
    assert colleague is not None
    colleague_id = colleague[1].split("-")[1]
    assert member.submit(f"/console/tokens/{colleague_id}/revoke").status == 303
    assert Client(gateway.url).sign_in(colleague[1]).status == 401
    # Revoking its own token signs the member out.
    own_id = token.split("-")[1]
    assert "That includes you." in member.get(f"/console/tokens/{own_id}/revoke").body
    assert member.submit(f"/console/tokens/{own_id}/revoke").status == 303
    assert member.get("/console/keys").location == "/console/sign-in"


def test_the_revoke_confirm_page_works_without_scripts(gateway: ConsoleGateway, operator: Client) -> None:
    operator.submit("/console/projects", {"name": "umbrella"})
    key = KEY.search(operator.submit("/console/keys", {"project": "umbrella"}).body)
    assert key is not None
    key_id = key[1].split("-")[1]
    confirm = operator.get(f"/console/keys/{key_id}/revoke")
    assert confirm.status == 200 and f'action="/console/keys/{key_id}/revoke"' in confirm.body
    assert _call(gateway, key[1], "claude-haiku-4-5") == 200
    assert wait_until(lambda: any(row["key_id"] == key_id for row in read_ledger(gateway.data_dir / "buzz.sqlite3")))
    # Checked once more after its ledger row is written, so nothing but the console's own word
    # can tell the gateway that the key changed.
    assert Client(gateway.url).get("/api/key", headers={"authorization": f"Bearer {key[1]}"}).status == 200
    done = operator.post(f"/console/keys/{key_id}/revoke", {"csrf": confirm.csrf()})
    assert done.status == 303 and done.location == "/console/keys?done=key-revoked"
    assert Client(gateway.url).get("/api/key", headers={"authorization": f"Bearer {key[1]}"}).status == 401
    assert _call(gateway, key[1], "claude-haiku-4-5") == 401
    assert "It is revoked already." in operator.get(f"/console/keys/{key_id}/revoke").body


def test_the_report_pages_are_in_the_navigation_and_usage_is_home(operator: Client) -> None:
    for section, title in (("usage", "Usage"), ("features", "Features"), ("cache", "Cache")):
        page = operator.get(f"/console/{section}")
        assert page.status == 200 and f"<h1>{title}" in page.body
        assert f'<a href="/console/{section}" aria-current="page">' in page.body
    assert operator.get("/console/").location == "/console/usage"


def test_the_console_can_be_turned_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"BUZZ_ADMIN_TOKEN": ADMIN_TOKEN, "BUZZ_CONSOLE": "false"}
    with ConsoleGateway(tmp_path_factory.mktemp("off") / "data", env, Clock(), Clock()) as gateway:
        reply = Client(gateway.url).get("/console/sign-in")
        assert reply.status == 404 and "gateway_not_found_error" in reply.body
