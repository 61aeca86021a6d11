"""The report pages over real HTTP: Usage, Features and Cache show the ledger's own sums, in the
viewer's time zone, never an unpriced cost as $0, and a member sees its own project only,
whatever the URL says.

Rows are written with `store.write_ledger` at fixed moments, and the console's wall clock is
held at noon UTC on 2026-03-12, so every range is known in advance.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from console_support import ADMIN_TOKEN, Client, ConsoleGateway, open_store

from buzz import console_tokens
from buzz.billing.ledger import LedgerRow
from buzz.billing.pricing import PriceBook
from buzz.billing.usage import Usage
from buzz.console.present import usd
from buzz.export import parse_export
from buzz.limits.base import Limits
from buzz.proxy.auth import generate_key
from fakes.fake_anthropic import FakeAnthropic
from support import UPSTREAM_KEY, Clock, raw_post, read_ledger, wait_until

NOW = datetime(2026, 3, 12, 12, 0, tzinfo=UTC).timestamp()
UNPRICED = "mystery-model-9"
SECRET = "globex-secret-feature"


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _row(number: int, when: str, project: str, key_id: str, model: str, **fields: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "surface": "anthropic",
        "status": 200,
        "usage_source": "reported",
        "latency_ms": 120.0,
        "provider": "anthropic",
        "input_tokens": 100,
        "output_tokens": 10,
        **fields,
    }
    return LedgerRow(f"row-{number}", _at(when), key_id=key_id, project=project, model=model, **values)


class World:
    """Two projects with a key each (acme has a second), a member token of acme's, and rows."""

    def __init__(self, gateway: ConsoleGateway) -> None:
        self.gateway = gateway
        store = open_store(gateway.data_dir)
        try:
            for project in ("acme", "globex"):
                store.save_project(project, {}, create=True)
            self.web, self.batch, self.theirs = (generate_key() for _ in range(3))
            store.create_key(self.web.key_id, "acme", "web app", self.web.secret_hash)
            store.create_key(self.batch.key_id, "acme", "batch", self.batch.secret_hash)
            store.create_key(self.theirs.key_id, "globex", "their key", self.theirs.secret_hash)
            member = console_tokens.generate()
            store.create_console_token(member.token_id, "acme", "acme team", member.secret_hash)
            self.member_token = member.token
            web, batch, theirs = self.web.key_id, self.batch.key_id, self.theirs.key_id
            sonnet = {"cache_read_tokens": 3000, "cache_write_5m_tokens": 400}
            store.write_ledger(
                [
                    # 20:00 UTC on the 10th is 01:30 on the 11th in Kolkata.
                    _row(1, "2026-03-10T20:00:00Z", "acme", web, "claude-sonnet-4-6", **sonnet,
                         input_tokens=1000, output_tokens=200, cost_nanos=1_234_567_891,
                         list_cost_nanos=1_500_000_000, tags=("feature=search", "team=core"), user_id="alice"),
                    _row(2, "2026-03-10T20:30:00Z", "acme", web, "claude-sonnet-4-6", status=429,
                         error_type="rate_limit_error", usage_source="none", input_tokens=0, output_tokens=0,
                         cost_nanos=0, list_cost_nanos=0, user_id="alice"),
                    _row(3, "2026-03-11T10:00:00Z", "acme", web, "claude-haiku-4-5", input_tokens=500,
                         output_tokens=50, cost_nanos=750_000, list_cost_nanos=800_000,
                         tags=("feature=chat", "feature=search", "team=growth"), user_id="bob"),
                    _row(4, "2026-03-11T11:00:00Z", "acme", web, UNPRICED, provider="openai",
                         tags=("feature=chat",)),
                    _row(5, "2026-03-09T03:00:00Z", "acme", batch, "claude-sonnet-4-6", usage_source="estimated",
                         input_tokens=2000, output_tokens=100, cache_write_1h_tokens=1000, cost_nanos=9_000_000,
                         list_cost_nanos=9_000_000),
                    _row(6, "2026-03-11T09:00:00Z", "globex", theirs, "gpt-5.5", provider="openai",
                         surface="openai", input_tokens=7000, output_tokens=700, cost_nanos=5_000_000_000,
                         list_cost_nanos=5_000_000_000, user_id="globex-user", tags=(f"feature={SECRET}",)),
                ]
            )  # fmt: skip
        finally:
            store.close()
        self.operator = Client(gateway.url)
        assert self.operator.sign_in(ADMIN_TOKEN).status == 303
        self.member = Client(gateway.url)
        assert self.member.sign_in(self.member_token).status == 303

    def ledger(self) -> list[dict[str, Any]]:
        return read_ledger(self.gateway.data_dir / "buzz.sqlite3")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("console-usage") / "data"
    with ConsoleGateway(data_dir, {"BUZZ_ADMIN_TOKEN": ADMIN_TOKEN}, Clock(), Clock(NOW)) as gateway:
        yield World(gateway)


# --- reading a page --------------------------------------------------------------------------

_ROW = re.compile(r'<tr class="([a-z]*)">\s*<th scope="row">(.*?)</th>(.*?)</tr>', re.S)
_CELL = re.compile(r'<td class="number[^"]*">(.*?)</td>', re.S)
_COLUMNS = ("requests", "input", "output", "write_5m", "write_1h", "read", "cost", "list", "saved", "errors")


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split()[0] if fragment.strip() else ""


def table(body: str) -> dict[str, dict[str, str]]:
    """The figures table: each line's label (the first word of its cell) -> column -> text."""
    lines = {}
    for kind, head, cells in _ROW.findall(body):
        label = "Total" if kind == "total" else _text(head)
        lines[label] = dict(zip(_COLUMNS, (html.unescape(c) for c in _CELL.findall(cells)), strict=True))
        lines[label]["flags"] = html.unescape(re.sub(r"<[^>]+>", " ", head))
    return lines


def chart(body: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="usage-data">(.*?)</script>', body, re.S)
    assert match is not None, "no chart data on the page"
    data: dict[str, Any] = json.loads(match[1])
    return data


def nanos(text: str) -> int:
    """ "$1,234.5" -> nano-dollars, exactly."""
    return int(Decimal(text.removeprefix("≥ ").replace("$", "").replace(",", "")) * 10**9)


def number(text: str) -> int:
    return int(text.replace(",", ""))


# --- the tests -------------------------------------------------------------------------------


def test_the_usage_page_shows_the_ledgers_own_sums(world: World) -> None:
    page = world.operator.get("/console/usage?project=acme&by=model")
    assert page.status == 200
    lines = table(page.body)
    rows = [row for row in world.ledger() if row["project"] == "acme"]
    for model in ("claude-sonnet-4-6", "claude-haiku-4-5"):
        mine = [row for row in rows if row["model"] == model]
        line = lines[model]
        assert number(line["requests"]) == len(mine)
        for column, field in (
            ("input", "input_tokens"),
            ("output", "output_tokens"),
            ("write_5m", "cache_write_5m_tokens"),
            ("write_1h", "cache_write_1h_tokens"),
            ("read", "cache_read_tokens"),
        ):
            assert number(line[column]) == sum(row[field] for row in mine), (model, column)
        assert nanos(line["cost"]) == sum(row["cost_nanos"] for row in mine)
        assert nanos(line["list"]) == sum(row["list_cost_nanos"] for row in mine)
        assert nanos(line["saved"]) == sum(row["list_cost_nanos"] - row["cost_nanos"] for row in mine)
    # Exactly, to the nano-dollar: never rounded to cents.
    assert lines["claude-sonnet-4-6"]["cost"] == "$1.243567891"
    # One of three sonnet requests was refused: a third, and one estimated.
    assert lines["claude-sonnet-4-6"]["errors"] == "33.3%"
    assert "1 estimated" in lines["claude-sonnet-4-6"]["flags"]
    total = lines["Total"]
    assert number(total["requests"]) == len(rows) == 5
    # The unpriced row is left out of the sum, and says so: a lower bound.
    assert total["cost"] == f"≥ ${Decimal(sum(row['cost_nanos'] or 0 for row in rows)) / 10**9}"
    assert "1 unpriced" in total["flags"]
    # The chart draws the same sums, per day, one series per model.
    data = chart(page.body)
    assert data["labels"][0] == "2026-03-06 00:00 +00:00" and data["labels"][-1] == "2026-03-12 00:00 +00:00"
    drawn = {series["label"]: sum(series["values"]) for series in data["series"]}
    assert drawn["claude-sonnet-4-6"] == nanos(lines["claude-sonnet-4-6"]["cost"])
    assert "2026-03-06 00:00 +00:00 to 2026-03-13 00:00 +00:00" in page.body  # every time with its offset
    # The export links carry the view, with its range spelled out as the export reads it.
    export = (
        "/console/export?range=7d&amp;tz=UTC&amp;bucket=day&amp;by=model&amp;project=acme"
        "&amp;since=2026-03-06T00%3A00%3A00%2B00%3A00&amp;until=2026-03-13T00%3A00%3A00%2B00%3A00&amp;format="
    )
    assert f'href="{export}csv"' in page.body and f'href="{export}jsonl"' in page.body
    link = re.search(r'href="(/console/export\?[^"]*csv)"', page.body)
    assert link is not None
    exported = parse_export(dict(parse_qsl(urlsplit(html.unescape(link[1])).query)), NOW, None)
    assert (exported.since, exported.until, exported.project) == (
        _at("2026-03-06T00:00:00Z"),
        _at("2026-03-13T00:00:00Z"),
        "acme",
    )


def _export_link(client: Client, view: str) -> str:
    link = re.search(r'href="(/console/export\?[^"]*csv)"', client.get(view).body)
    assert link is not None
    return html.unescape(link[1])


def test_the_export_link_streams_the_views_rows_and_a_members_own_only(world: World) -> None:
    link = _export_link(world.operator, "/console/usage?range=7d")
    reply = world.operator.get(link)
    assert reply.status == 200
    assert reply.header("content-type") == "text/csv; charset=utf-8"
    assert reply.header("content-security-policy") is not None
    rows = list(csv.DictReader(io.StringIO(reply.body, newline="")))
    in_range = [r for r in world.ledger() if "2026-03-06" <= r["ts"] < "2026-03-13"]
    assert [r["id"] for r in rows] == [r["id"] for r in in_range] and len(rows) >= 6
    # A member's export: its project's rows, whatever the link says.
    theirs = _export_link(world.member, "/console/usage?range=7d").replace("format=csv", "project=globex&format=csv")
    member_rows = list(csv.DictReader(io.StringIO(world.member.get(theirs).body, newline="")))
    assert {r["project"] for r in member_rows} == {"acme"}
    assert [r["id"] for r in member_rows] == [r["id"] for r in in_range if r["project"] == "acme"]
    assert SECRET not in world.member.get(theirs).body
    # No session: to sign-in; a parameter that cannot be read: a 400 that names it.
    assert Client(world.gateway.url).get(link).status == 303
    bad = world.operator.get(link.replace("format=csv", "format=xlsx"))
    assert bad.status == 400 and "format:" in bad.body


def test_daily_buckets_are_days_of_the_chosen_time_zone(world: World) -> None:
    def day_of_first_row(tz: str) -> str:
        # The first row (20:00 UTC on the 10th) is the only sonnet row of its day.
        page = world.operator.get(f"/console/usage?project=acme&by=model&model=claude-sonnet-4-6&tz={tz}")
        assert page.status == 200
        data = chart(page.body)
        [series] = data["series"]
        days = [label for label, value in zip(data["labels"], series["values"], strict=True) if value == 1_234_567_891]
        assert len(days) == 1, (tz, data)
        return str(days[0])

    assert day_of_first_row("UTC") == "2026-03-10 00:00 +00:00"
    assert day_of_first_row("Asia/Kolkata") == "2026-03-11 00:00 +05:30"
    assert day_of_first_row("America/New_York") == "2026-03-10 00:00 -04:00"  # summer time from the 8th
    page = world.operator.get("/console/usage?tz=Asia/Kolkata&range=24h")
    assert "2026-03-11 18:00 +05:30 to 2026-03-12 18:00 +05:30" in page.body
    assert '<option value="Asia/Kolkata" selected>Asia/Kolkata (UTC+05:30)</option>' in page.body
    # A zone from the URL that is not in the list is offered too.
    page = world.operator.get("/console/usage?tz=Asia/Kathmandu")
    assert '<option value="Asia/Kathmandu" selected>Asia/Kathmandu (UTC+05:45)</option>' in page.body


def test_an_unpriced_cost_is_never_shown_as_zero(world: World) -> None:
    page = world.operator.get(f"/console/usage?model={UNPRICED}")
    lines = table(page.body)
    assert lines[UNPRICED]["cost"] == "—" and lines[UNPRICED]["list"] == "—" and lines[UNPRICED]["saved"] == "—"
    assert lines["Total"]["cost"] == "—"
    assert "1 unpriced" in lines[UNPRICED]["flags"]
    assert "$0" not in page.body.split('id="figures"')[1]
    summary = re.search(r'<div class="figure lead-figure">(.*?)</div>', page.body, re.S)
    assert summary is not None and "—" in summary[1] and "$0" not in summary[1]
    # Mixed with priced rows, the sum is a lower bound.
    chat = table(world.operator.get("/console/usage?project=acme&by=tag:feature").body)["chat"]
    assert chat["cost"] == "≥ $0.00075" and "1 unpriced" in chat["flags"]


def test_a_split_by_tag_counts_a_request_under_each_of_its_values(world: World) -> None:
    page = world.member.get("/console/usage?by=tag:feature")
    lines = table(page.body)
    assert number(lines["search"]["requests"]) == 2 and number(lines["chat"]["requests"]) == 2
    # What carries no value of the key: the refused request and the estimated one.
    assert number(lines["untagged"]["requests"]) == 2
    assert number(lines["Total"]["requests"]) == 5  # requests, not the lines' sum
    assert "counts under each" in page.body
    whole = table(world.member.get("/console/usage?by=tag").body)
    assert {label: number(line["requests"]) for label, line in whole.items()} == {
        "feature=search": 2,
        "feature=chat": 2,
        "team=core": 1,
        "team=growth": 1,
        "Total": 5,
    }
    teams = table(world.member.get("/console/usage?by=tag:team").body)
    assert [(label, number(line["requests"])) for label, line in teams.items()] == [
        ("core", 1),
        ("growth", 1),
        ("untagged", 3),  # the refused request, the unpriced one and the estimated one
        ("Total", 5),
    ]

    features = world.member.get("/console/features")
    assert features.status == 200 and "<h1>Features" in features.body
    assert table(features.body).keys() == lines.keys()
    link = "/console/usage?range=7d&amp;tz=UTC&amp;bucket=day&amp;by=tag%3Afeature&amp;project=acme"
    assert f'href="{link}"' in features.body


def test_the_cache_page_prices_writes_and_reads(world: World) -> None:
    page = world.operator.get("/console/cache?project=acme")
    assert page.status == 200
    row = re.search(r"<code>claude-sonnet-4-6</code>.*?</tr>", page.body, re.S)
    assert row is not None
    cells = [html.unescape(c) for c in re.findall(r'<td class="number">(.*?)</td>', row[0])]
    # Two sonnet rows carry cache traffic: 400 tokens written for 5 minutes, 1000 for an hour, 3000 read.
    rates = PriceBook().buzz_price("anthropic", "claude-sonnet-4-6", datetime.fromtimestamp(NOW, UTC))
    assert rates is not None
    writes = rates.base.nanos_for(Usage(cache_write_5m_tokens=400, cache_write_1h_tokens=1000))
    saved = rates.base.nanos_for(Usage(input_tokens=3000)) - rates.base.nanos_for(Usage(cache_read_tokens=3000))
    assert cells[:3] == ["3,000", "400", "1,000"] and cells[4] == "3,000"
    assert (nanos(cells[3]), nanos(cells[5])) == (writes, saved)
    assert "40.5%" in row[0]  # 3,000 of 7,400 input tokens came from the cache
    unpriced = re.search(rf"<code>{UNPRICED}</code>.*?</tr>", page.body, re.S)
    assert unpriced is not None and "$0" not in unpriced[0] and "—" in unpriced[0]


def test_a_member_sees_its_own_project_whatever_the_url_says(world: World) -> None:
    theirs = world.theirs.key_id
    for path in (
        "/console/usage?project=globex",
        "/console/usage?project=globex&by=model",
        "/console/usage?by=user",
        "/console/usage?by=key",
        "/console/usage?by=tag:feature&range=30d",
        "/console/features?project=globex",
        "/console/cache?project=globex",
    ):
        page = world.member.get(path)
        assert page.status == 200, path
        for secret in ("globex", "gpt-5.5", SECRET, theirs):
            assert secret not in page.body, (path, secret)
        assert '<option value="project"' not in page.body, path  # no split by project, either
    assert number(table(world.member.get("/console/usage?project=globex").body)["Total"]["requests"]) == 5
    # Filters that name another project's data find none of it.
    for path in (
        "/console/usage?model=gpt-5.5",
        f"/console/features?tag=feature={SECRET}",
        "/console/usage?user=globex-user",
    ):
        assert table(world.member.get(path).body)["Total"]["requests"] == "0", path
    # A key of another project is no key at all; a split by project is refused.
    for path in (f"/console/usage?key={theirs}", f"/console/features?key={theirs}", f"/console/cache?key={theirs}"):
        reply = world.member.get(path)
        assert reply.status == 404 and theirs not in reply.body, path
    refused = world.member.get("/console/usage?by=project")
    assert refused.status == 400 and "you see one project" in refused.body and "globex" not in refused.body
    # The operator sees both, and may split by project.
    lines = table(world.operator.get("/console/usage?by=project").body)
    assert number(lines["acme"]["requests"]) == 5 and number(lines["globex"]["requests"]) == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("tz=Mars/Olympus", "tz: unknown time zone 'Mars/Olympus'"),
        ("range=99y", "range: use 24h, 7d, 30d or custom"),
        ("bucket=week", "bucket: use hour or day"),
        ("status=3xx", "status: use 2xx, 4xx or 5xx"),
        ("by=tag:", "by: name the tag key"),
        ("by=colour", "by: use one of"),
        ("range=custom", "since: a custom range needs one"),
        ("range=custom&since=yesterday", "since: use a duration back from now"),
        ("range=custom&since=2026-03-10&until=2026-03-01", "until: must be after since"),
        ("range=custom&since=2020-01-01&bucket=hour", "at most 9600 buckets"),
        ("metric=dollars", "metric: use cost, tokens or requests"),
    ],
)
def test_a_parameter_that_cannot_be_read_is_a_400_that_says_why(world: World, query: str, message: str) -> None:
    for page in ("usage", "features", "cache"):
        reply = world.operator.get(f"/console/{page}?{query}")
        assert reply.status == 400, (page, query)
        assert message in html.unescape(reply.body), (page, query)
        assert 'role="alert"' in reply.body and "Traceback" not in reply.body
        assert '<form method="get"' in reply.body  # the form stays, to fix the parameter


def test_requests_through_the_gateway_reach_the_usage_and_keys_pages(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeAnthropic
) -> None:
    env = {"BUZZ_ADMIN_TOKEN": ADMIN_TOKEN, "ANTHROPIC_API_KEY": UPSTREAM_KEY, "BUZZ_ANTHROPIC_BASE_URL": fake.url}
    data_dir = tmp_path_factory.mktemp("console-usage-live") / "data"
    # The wall clock is the real one here: the ledger stamps rows with it.
    with ConsoleGateway(data_dir, env, Clock(), time.time) as gateway:
        store = open_store(data_dir)
        try:
            store.save_project("acme", {}, create=True)
            limited, free = generate_key(), generate_key()
            caps = Limits(itpm=100_000, concurrency=4, daily_nanos=10 * 10**9, monthly_nanos=100 * 10**9)
            store.create_key(limited.key_id, "acme", "limited", limited.secret_hash, caps)
            store.create_key(free.key_id, "acme", "free", free.secret_hash)
        finally:
            store.close()
        body = json.dumps(
            {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        )
        for key in (limited, limited, free):
            assert raw_post(gateway.url, "/v1/messages", body.encode(), {"x-api-key": key.token})[0] == 200
        assert wait_until(lambda: len(read_ledger(data_dir / "buzz.sqlite3")) == 3)
        rows = read_ledger(data_dir / "buzz.sqlite3")
        spent = sum(row["cost_nanos"] for row in rows if row["key_id"] == limited.key_id)
        assert spent > 0

        operator = Client(gateway.url)
        assert operator.sign_in(ADMIN_TOKEN).location == "/console/"
        assert operator.get("/console/").location == "/console/usage"  # the console's home
        lines = table(operator.get("/console/usage?range=24h&by=key").body)
        assert number(lines[limited.key_id]["requests"]) == 2 and nanos(lines[limited.key_id]["cost"]) == spent
        assert number(lines[free.key_id]["requests"]) == 1
        assert "limited" in lines[limited.key_id]["flags"]  # the key's name under its id

        page = operator.get("/console/keys")
        row = re.search(rf'<tr data-key="{limited.key_id}".*?</tr>', page.body, re.S)
        assert row is not None
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        last_used = re.search(r'class="when last-used">(.*?)<', row[0])
        assert last_used is not None and last_used[1].startswith(today) and last_used[1].endswith(" UTC")
        # Spend from the ledger, for the UTC day and month.
        spend = re.search(r'class="number spend">(.*?)<br>(.*?)</td>', row[0])
        assert spend is not None and nanos(spend[1]) == nanos(spend[2]) == spent
        headroom = dict(
            (name, (limit, html.unescape(left)))
            for name, limit, left in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd><dd[^>]*>(.*?)</dd>", row[0])
        )
        assert headroom["requests/min"] == ("—", "")  # not set
        assert headroom["concurrent"] == ("4", "4 left")  # nothing in flight
        assert headroom["per day"] == ("$10.00", f"{usd(10 * 10**9 - spent)} left")
        assert headroom["per month"] == ("$100.00", f"{usd(100 * 10**9 - spent)} left")
        assert headroom["input tokens/min"][0] == "100,000"
        other = re.search(rf'<tr data-key="{free.key_id}".*?</tr>', page.body, re.S)
        assert other is not None
        free_spend = re.search(r'class="number spend">(.*?)<br>(.*?)</td>', other[0])
        free_spent = sum(row["cost_nanos"] for row in rows if row["key_id"] == free.key_id)
        assert free_spend is not None and nanos(free_spend[1]) == nanos(free_spend[2]) == free_spent > 0
        assert '<span class="muted">none</span>' in other[0]


def test_a_report_past_the_raw_row_limit_is_refused_with_a_way_to_narrow_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = tmp_path_factory.mktemp("console-raw-limit") / "data"
    env = {"BUZZ_ADMIN_TOKEN": ADMIN_TOKEN, "BUZZ_REPORTS_RAW_ROWS_LIMIT": "2"}
    with ConsoleGateway(data_dir, env, Clock(), Clock(NOW)) as gateway:
        store = open_store(data_dir)
        try:
            store.save_project("acme", {}, create=True)
            key = generate_key()
            store.create_key(key.key_id, "acme", "web app", key.secret_hash)
            store.write_ledger(
                [
                    _row(
                        n,
                        f"2026-03-11T0{n}:00:00Z",
                        "acme",
                        key.key_id,
                        "claude-haiku-4-5",
                        user_id=f"u{n}",
                        tags=("feature=search",),
                    )
                    for n in range(1, 4)
                ]
            )
        finally:
            store.close()
        operator = Client(gateway.url)
        assert operator.sign_in(ADMIN_TOKEN).status == 303
        # Three raw rows to read, over a limit of two: refused, on every page that would read them.
        for path in (
            f"/console/usage?range=7d&by=user&key={key.key_id}",
            f"/console/features?range=7d&key={key.key_id}",
            "/console/cache?range=7d&user=u1",
        ):
            reply = operator.get(path)
            assert reply.status == 400, path
            if "features" in path:  # a tag split also reads what carries no feature
                assert "3 over this range, read twice (6 in all)" in html.unescape(reply.body)
            text = html.unescape(reply.body)
            assert "read from raw ledger rows: 3 over this range" in text, path
            assert "more than the 2 a report here may read" in text, path
            assert "Narrow the range" in text and '<form method="get"' in reply.body
        # What the rollups hold is answered, whatever the limit.
        lines = table(operator.get(f"/console/usage?range=7d&by=model&key={key.key_id}").body)
        assert number(lines["claude-haiku-4-5"]["requests"]) == 3
        # The usage API says the same, as a gateway error.
        status, body = _api(gateway.url, f"/admin/api/usage?range=7d&by=user&key={key.key_id}")
        assert status == 400
        error = json.loads(body)["error"]
        assert error["type"] == "gateway_invalid_request_error"
        assert "more than the 2 a report here may read" in error["message"]
        status, body = _api(gateway.url, f"/admin/api/usage?range=7d&by=model&key={key.key_id}")
        assert status == 200 and json.loads(body)["total"]["requests"] == 3


def _api(url: str, path: str) -> tuple[int, bytes]:
    reply = Client(url).get(path, {"authorization": f"Bearer {ADMIN_TOKEN}"})
    return reply.status, reply.body.encode()
