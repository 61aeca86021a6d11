"""Gemini's other model methods through buzz, with the real google-genai SDK: countTokens,
embedContent, batchEmbedContents, and the model list and details, under `/v1/` (google-genai
3.x's default) and `/v1beta/`.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google import genai
from google.genai import types

from fakes.fake_anthropic import FakeAnthropic
from fakes.fake_google import DEFAULT_MODELS, FakeGoogle
from support import BuzzProcess, raw_post

UPSTREAM = "gemini-upstream-key-for-methods"
EMBEDDING_MODEL = "gemini-embedding-001"
EMBEDDING_NANOS = 150  # gemini-embedding-001: $0.15 per million input tokens
VERSIONS = [None, "v1beta"]  # None: the SDK's own default, /v1/


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic, google: FakeGoogle
) -> Iterator[BuzzProcess]:
    env = {"GEMINI_API_KEY": UPSTREAM, "BUZZ_GOOGLE_BASE_URL": google.url}
    with BuzzProcess(tmp_path_factory.mktemp("gemini-methods") / "data", fake_session.url, env=env) as process:
        yield process


@pytest.fixture
def fake(google: FakeGoogle) -> Iterator[FakeGoogle]:
    google.clear()
    yield google
    google.clear()
    google.drain_replies()


def _client(gateway: BuzzProcess, key: str, version: str | None, scenario: str | None = None) -> genai.Client:
    headers = {"x-fake-scenario": scenario} if scenario else None
    options = types.HttpOptions(base_url=gateway.url, api_version=version, headers=headers)
    return genai.Client(api_key=key, http_options=options)


def _rows(gateway: BuzzProcess, project: str, count: int) -> list[dict[str, Any]]:
    rows = gateway.ledger(count=count, where=lambda r: r["project"] == project)
    assert len(rows) == count
    return rows


def _prefix(version: str | None) -> str:
    return f"/{version or 'v1'}"


@pytest.mark.parametrize("version", VERSIONS)
def test_count_tokens_is_forwarded_and_not_billed(gateway: BuzzProcess, fake: FakeGoogle, version: str | None) -> None:
    project = f"count-{version}"
    key = gateway.create_key(project=project)
    client = _client(gateway, key, version)  # kept in a variable: the SDK closes a collected client
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents="How many?")
    [seen] = fake.requests
    assert (seen.method, seen.path) == ("POST", f"{_prefix(version)}/models/gemini-2.5-flash:countTokens")
    assert counted.total_tokens == max(1, len(seen.body) // 4)
    assert seen.header("x-goog-api-key") == UPSTREAM and key.encode() not in seen.raw_head
    [row] = _rows(gateway, project, 1)
    assert (row["surface"], row["provider"], row["model"], row["status"]) == (
        "gemini",
        "google",
        "gemini-2.5-flash",
        200,
    )
    assert (row["usage_source"], row["input_tokens"], row["cost_nanos"]) == ("none", 0, 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_embed_content_single_and_batch_estimate_input_from_the_text(
    gateway: BuzzProcess, fake: FakeGoogle, version: str | None
) -> None:
    project = f"embed-{version}"
    key = gateway.create_key(project=project)
    client = _client(gateway, key, version)
    single = client.models.embed_content(model=EMBEDDING_MODEL, contents="embed me please")
    batch = client.models.embed_content(model=EMBEDDING_MODEL, contents=["one", "two three"])
    assert single.embeddings is not None and len(single.embeddings) == 1
    assert batch.embeddings is not None and len(batch.embeddings) == 2
    # google-genai sends both as batchEmbedContents (one request per content) to the Gemini API.
    paths = [r.path for r in fake.requests]
    assert paths == [f"{_prefix(version)}/models/{EMBEDDING_MODEL}:batchEmbedContents"] * 2
    assert [len(r.json()["requests"]) for r in fake.requests] == [1, 2]
    rows = _rows(gateway, project, 2)
    # No usage in the answer: about 4 characters a token, for each text.
    assert [(r["input_tokens"], r["output_tokens"], r["usage_source"]) for r in rows] == [
        (4, 0, "estimated"),  # "embed me please": 15 characters
        (1 + 3, 0, "estimated"),  # "one", "two three"
    ]
    assert [r["cost_nanos"] for r in rows] == [4 * EMBEDDING_NANOS, 4 * EMBEDDING_NANOS]
    assert all((r["model"], r["provider"], r["status"]) == (EMBEDDING_MODEL, "google", 200) for r in rows)


def test_embedding_usage_in_the_answer_is_read(gateway: BuzzProcess, fake: FakeGoogle) -> None:
    key = gateway.create_key(project="embed-usage")
    client = _client(gateway, key, None, scenario="embed-usage")
    client.models.embed_content(model=EMBEDDING_MODEL, contents=["a", "b", "c"])
    [seen] = fake.requests
    reported = max(1, len(seen.body) // 4)
    [row] = _rows(gateway, "embed-usage", 1)
    assert (row["input_tokens"], row["usage_source"], row["cost_nanos"]) == (
        reported,
        "reported",
        reported * EMBEDDING_NANOS,
    )


def test_embed_content_method_is_metered(gateway: BuzzProcess, fake: FakeGoogle) -> None:
    key = gateway.create_key(project="embed-one")
    body = b'{"content":{"parts":[{"text":"twelve chars"},{"text":"and five"}]},"outputDimensionality":4}'
    status, _, data = raw_post(
        gateway.url, f"/v1beta/models/{EMBEDDING_MODEL}:embedContent", body, {"x-goog-api-key": key}
    )
    assert status == 200 and len(json.loads(data)["embedding"]["values"]) == 4
    [seen] = fake.requests
    assert (seen.path, seen.body) == (f"/v1beta/models/{EMBEDDING_MODEL}:embedContent", body)
    [row] = _rows(gateway, "embed-one", 1)
    assert (row["input_tokens"], row["usage_source"]) == (3 + 2, "estimated")


@pytest.mark.parametrize("version", VERSIONS)
def test_model_list_and_details_are_googles(gateway: BuzzProcess, fake: FakeGoogle, version: str | None) -> None:
    project = f"models-{version}"
    key = gateway.create_key(project=project)
    client = _client(gateway, key, version)
    assert [model.name for model in client.models.list()] == [f"models/{m}" for m, _ in DEFAULT_MODELS]
    assert client.models.get(model="gemini-2.5-pro").display_name == "Gemini 2.5 Pro"
    listed, got = fake.requests
    assert (listed.method, listed.path) == ("GET", f"{_prefix(version)}/models")
    assert (got.method, got.path) == ("GET", f"{_prefix(version)}/models/gemini-2.5-pro")
    for seen in (listed, got):
        assert seen.header("x-goog-api-key") == UPSTREAM and key.encode() not in seen.raw_head
    rows = _rows(gateway, project, 2)
    assert [(r["surface"], r["provider"], r["model"], r["usage_source"]) for r in rows] == [
        ("gemini", "google", None, "none"),
        ("gemini", "google", "gemini-2.5-pro", "none"),
    ]


def test_key_in_the_query_makes_v1_models_geminis(gateway: BuzzProcess, fake: FakeGoogle) -> None:
    key = gateway.create_key(project="models-query")
    status, _, data = _get(gateway.url, f"/v1/models?pageSize=2&key={key}")
    assert status == 200 and "models" in json.loads(data)
    [seen] = fake.requests
    assert (seen.path, seen.query_string) == ("/v1/models", f"pageSize=2&key={UPSTREAM}")
    assert seen.header("x-goog-api-key") is None


def _get(url: str, target: str) -> tuple[int, list[tuple[str, str]], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", target)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheaders(), data
