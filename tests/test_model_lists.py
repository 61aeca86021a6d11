"""The OpenAI surface's `GET /v1/models`: the union of what each configured vendor itself lists.

A real buzz app on a real uvicorn server (in this process, so that the model lists' cache runs
on a clock the test moves), four fake vendors, the real openai SDK.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import aiohttp
import openai
import pytest

from buzz import config as buzz_config
from buzz.catalogue import Catalogue
from buzz.proxy.forward import make_session
from buzz.upstreams.model_lists import DEFAULT_RETRY_TTL, DEFAULT_TTL, ModelLists
from fakes import openai_sse
from fakes.fake_anthropic import FakeAnthropic
from fakes.fake_google import FakeGoogle
from fakes.fake_openai import FakeOpenAI, FakeXAI
from fakes.replies import Reply
from support import Clock, InProcessGateway, free_port

FINE_TUNE = "ft:gpt-4.1:acme:support:xyz"  # an account's own model: no catalogue knows it
KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-lists",
    "OPENAI_API_KEY": "sk-openai-lists",
    "GEMINI_API_KEY": "gemini-lists",
    "XAI_API_KEY": "xai-lists",
}
CLAUDE = (("claude-opus-4-8", "Claude Opus 4.8"), ("claude-sonnet-4-6", "Claude Sonnet 4.6"))
# What buzz lists, in order: vendor by vendor, each in its own order. `dall-e-3`, which the fake
# OpenAI also lists, is left out: no request naming it would reach OpenAI through buzz.
UNION = [
    ("claude-opus-4-8", "anthropic"),
    ("claude-sonnet-4-6", "anthropic"),
    *[(model, "openai") for model in (*openai_sse.DEFAULT_MODELS, FINE_TUNE)],
    ("gemini-2.5-flash", "google"),
    ("gemini-2.5-pro", "google"),
    ("gemini-3-flash-preview", "google"),
    *[(model, "xai") for model in openai_sse.XAI_MODELS],
]


class Vendors:
    def __init__(self) -> None:
        self.anthropic = FakeAnthropic(models=CLAUDE)
        self.openai = FakeOpenAI(models=(*openai_sse.DEFAULT_MODELS, FINE_TUNE, "dall-e-3"))
        self.google = FakeGoogle()
        self.xai = FakeXAI()
        self.all = (self.anthropic, self.openai, self.google, self.xai)

    def env(self) -> dict[str, str]:
        return {
            **KEYS,
            "BUZZ_ANTHROPIC_BASE_URL": self.anthropic.url,
            "BUZZ_OPENAI_BASE_URL": self.openai.url + "/v1",
            "BUZZ_GOOGLE_BASE_URL": self.google.url,
            "BUZZ_XAI_BASE_URL": self.xai.url + "/v1",
        }

    def clear(self) -> None:
        for fake in self.all:
            fake.clear()
            fake.drain_replies()

    def list_requests(self) -> list[int]:
        """How many model-list requests each vendor received, in registry order."""
        return [len([r for r in fake.requests if r.method == "GET"]) for fake in self.all]


@pytest.fixture(scope="module")
def vendors() -> Iterator[Vendors]:
    made = Vendors()
    for fake in made.all:
        fake.start()
    yield made
    for fake in made.all:
        fake.stop()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, vendors: Vendors, clock: Clock) -> Iterator[InProcessGateway]:
    data_dir = tmp_path_factory.mktemp("model-lists") / "data"
    with InProcessGateway(data_dir, vendors.env(), clock) as running:
        yield running


@pytest.fixture
def fakes(vendors: Vendors, clock: Clock) -> Iterator[Vendors]:
    """The vendors with nothing recorded, and buzz's cached union out of date."""
    clock.now += DEFAULT_TTL + 1
    vendors.clear()
    yield vendors
    vendors.clear()


def _client(gateway: InProcessGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)


def test_openai_sdk_lists_what_each_vendor_lists(gateway: InProcessGateway, fakes: Vendors) -> None:
    key = gateway.create_key()
    raw = _client(gateway, key).models.with_raw_response.list()
    listed = list(raw.parse())
    assert [(model.id, model.owned_by) for model in listed] == UNION
    assert "x-buzz-models-fallback" not in raw.headers
    assert all(model.object == "model" and model.model_extra == {} for model in listed)
    opus = next(model for model in listed if model.id == "claude-opus-4-8")
    assert opus.created == int(datetime.fromisoformat("2026-05-28T00:00:00+00:00").timestamp())  # from created_at
    # Each vendor was asked once, at its own list, with buzz's credential and never the client's.
    [anthropic], [oai], [google], [xai] = (fake.requests for fake in fakes.all)
    assert (anthropic.path, anthropic.query_string) == ("/v1/models", "limit=1000")
    assert anthropic.header("x-api-key") == KEYS["ANTHROPIC_API_KEY"]
    assert anthropic.header("anthropic-version") == "2023-06-01"
    assert (oai.path, oai.header("authorization")) == ("/v1/models", f"Bearer {KEYS['OPENAI_API_KEY']}")
    assert (google.path, google.header("authorization")) == (
        "/v1beta/openai/models",
        f"Bearer {KEYS['GEMINI_API_KEY']}",
    )
    assert (xai.path, xai.header("authorization")) == ("/v1/models", f"Bearer {KEYS['XAI_API_KEY']}")
    for seen in (anthropic, oai, google, xai):
        assert key.encode() not in seen.raw_head


def test_an_accounts_fine_tune_is_listed_retrievable_and_routed(gateway: InProcessGateway, fakes: Vendors) -> None:
    key = gateway.create_key(project="fine-tunes")
    client = _client(gateway, key)
    one = client.models.retrieve(FINE_TUNE)
    assert (one.id, one.owned_by) == (FINE_TUNE, "openai")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("dall-e-3")  # listed by OpenAI, but not something buzz routes
    assert missing.value.type == "gateway_not_found_error"
    fakes.clear()
    reply = client.chat.completions.create(model=FINE_TUNE, messages=[{"role": "user", "content": "hi"}])
    assert reply.model == FINE_TUNE
    [seen] = fakes.openai.requests
    assert (seen.path, json.loads(seen.body)["model"]) == ("/v1/chat/completions", FINE_TUNE)
    [row] = gateway.ledger(count=1, where=lambda r: r["project"] == "fine-tunes")
    assert (row["provider"], row["model"], row["status"]) == ("openai", FINE_TUNE, 200)


def test_the_list_is_what_the_key_may_use(gateway: InProcessGateway, fakes: Vendors) -> None:
    key = gateway.create_key(allowed_models=["claude-sonnet-*", "ft:*", "gemini-2.5-pro"])
    client = _client(gateway, key)
    assert [model.id for model in client.models.list()] == ["claude-sonnet-4-6", FINE_TUNE, "gemini-2.5-pro"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5.5")  # listed by OpenAI, outside the key's allow-list
    assert client.models.retrieve("gemini-2.5-pro").owned_by == "google"


def test_a_vendor_that_fails_is_served_from_the_catalogue_and_marked(
    gateway: InProcessGateway, fakes: Vendors, clock: Clock
) -> None:
    fakes.xai.enqueue(Reply(status=503, body=b'{"error":"down"}'))
    fakes.google.enqueue(Reply(body=b"<html>not a list</html>", headers=[("content-type", "text/html")]))
    client = _client(gateway, gateway.create_key())
    raw = client.models.with_raw_response.list()
    assert raw.headers["x-buzz-models-fallback"] == "google,xai"
    listed = list(raw.parse())
    catalogue = Catalogue.default()
    fallback = [model for model in listed if model.model_extra]
    assert [(m.id, m.owned_by) for m in fallback] == [
        *[(entry.id, "google") for entry in catalogue.list("google")],
        *[(entry.id, "xai") for entry in catalogue.list("xai")],
    ]
    assert all(m.model_extra == {"buzz_fallback": True} for m in fallback)
    live = [(m.id, m.owned_by) for m in listed if not m.model_extra]
    assert live == [entry for entry in UNION if entry[1] in ("anthropic", "openai")]
    # A failed vendor is asked again sooner than the full lifetime of the list.
    clock.now += DEFAULT_RETRY_TTL + 1
    assert [model.id for model in client.models.list()] == [model for model, _ in UNION]
    assert fakes.list_requests() == [2, 2, 2, 2]


def test_the_union_is_cached_for_its_lifetime(gateway: InProcessGateway, fakes: Vendors, clock: Clock) -> None:
    client = _client(gateway, gateway.create_key())
    first = [model.id for model in client.models.list()]
    assert fakes.list_requests() == [1, 1, 1, 1]
    clock.now += DEFAULT_TTL - 1
    assert [model.id for model in client.models.list()] == first
    assert client.models.retrieve("grok-4").owned_by == "xai"
    assert fakes.list_requests() == [1, 1, 1, 1]  # answered from the cache: no vendor asked
    clock.now += 2
    assert [model.id for model in client.models.list()] == first
    assert fakes.list_requests() == [2, 2, 2, 2]


def test_a_list_needs_a_valid_key(gateway: InProcessGateway, fakes: Vendors) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        list(_client(gateway, "buzz-nope").models.list())
    assert raised.value.type == "gateway_authentication_error"
    assert fakes.list_requests() == [0, 0, 0, 0]


# --- ModelLists on its own: failures of every kind, and one refresh for concurrent callers ----


def _lists(
    vendors: Vendors, clock: Clock, timeout: float = 10.0, **env: str
) -> tuple[ModelLists, aiohttp.ClientSession]:
    config = buzz_config.load(None, env={**vendors.env(), **env})
    session = make_session(connect_timeout=5, read_timeout=30)
    return ModelLists(config, Catalogue.default(), session, clock, timeout=timeout), session


def test_concurrent_callers_share_one_refresh(fakes: Vendors) -> None:
    async def scenario() -> list[list[str]]:
        lists, session = _lists(fakes, Clock())
        try:
            unions = await asyncio.gather(*(lists.union() for _ in range(8)))
        finally:
            await session.close()
        return [[model.id for model in union.models] for union in unions]

    results = asyncio.run(scenario())
    assert results == [[model for model, _ in UNION]] * 8
    assert fakes.list_requests() == [1, 1, 1, 1]


def test_unreachable_silent_and_unreadable_vendors_fall_back(fakes: Vendors) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    fakes.openai.enqueue(Reply(hang=True))
    fakes.anthropic.enqueue(Reply(body=b'{"data": "not a list"}'))

    async def scenario() -> tuple[tuple[str, ...], list[str]]:
        lists, session = _lists(fakes, Clock(), timeout=1.0, BUZZ_XAI_BASE_URL=closed)
        try:
            union = await lists.union()
        finally:
            await session.close()
        return union.from_catalogue, [model.id for model in union.models if not model.from_catalogue]

    fallback, live = asyncio.run(scenario())
    assert fallback == ("anthropic", "openai", "xai")
    assert live == ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-flash-preview"]


def test_anthropic_is_read_page_by_page(fakes: Vendors) -> None:
    many = tuple((f"claude-test-{i:04d}", f"Test {i}") for i in range(2500))
    anthropic = FakeAnthropic(models=many)
    anthropic.start()
    try:

        async def scenario() -> list[str]:
            lists, session = _lists(fakes, Clock(), BUZZ_ANTHROPIC_BASE_URL=anthropic.url)
            try:
                union = await lists.union()
            finally:
                await session.close()
            return [model.id for model in union.models if model.provider == "anthropic"]

        assert asyncio.run(scenario()) == [model for model, _ in many]
        assert [r.query_string for r in anthropic.requests] == [
            "limit=1000",
            "limit=1000&after_id=claude-test-0999",
            "limit=1000&after_id=claude-test-1999",
        ]
    finally:
        anthropic.stop()


def test_nothing_configured_lists_nothing(tmp_path: Path) -> None:
    async def scenario() -> int:
        config = buzz_config.load(None, env={"BUZZ_DATA_DIR": str(tmp_path)})
        session = make_session(connect_timeout=5, read_timeout=30)
        try:
            return len((await ModelLists(config, Catalogue.default(), session, Clock()).union()).models)
        finally:
            await session.close()

    assert asyncio.run(scenario()) == 0
