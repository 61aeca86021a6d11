"""Credentials and client text, handled strictly.

buzz forwards no credential it did not put there itself (every `key` query parameter, every
credential header, anything carrying a buzz key), keeping every other byte of the query as sent.
Client mistakes are the client's (400, not a retryable 500), and only text that looks like an
identifier is kept in the ledger.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fakes.fake_anthropic import FakeAnthropic
from fakes.fake_google import FakeGoogle
from fakes.fake_openai import FakeOpenAI
from fakes.replies import Reply
from support import UPSTREAM_KEY, BuzzProcess, raw_post

GEMINI_KEY = "gemini-upstream-strict"
OPENAI_KEY = "sk-openai-upstream-strict"
MESSAGE = b'{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
GENERATE = b'{"contents":[{"parts":[{"text":"hi"}]}]}'
CHAT = b'{"model":"gpt-5.5","messages":[{"role":"user","content":"hi"}]}'


class Upstreams:
    def __init__(self, anthropic: FakeAnthropic, google: FakeGoogle, openai: FakeOpenAI) -> None:
        self.anthropic, self.google, self.openai = anthropic, google, openai

    def clear(self) -> None:
        for fake in (self.anthropic, self.google, self.openai):
            fake.clear()
            fake.drain_replies()


@pytest.fixture(scope="module")
def upstreams(fake_session: FakeAnthropic) -> Iterator[Upstreams]:
    with FakeGoogle() as google, FakeOpenAI() as openai:
        yield Upstreams(fake_session, google, openai)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> Iterator[BuzzProcess]:
    env = {
        "GEMINI_API_KEY": GEMINI_KEY,
        "BUZZ_GOOGLE_BASE_URL": upstreams.google.url,
        "OPENAI_API_KEY": OPENAI_KEY,
        "BUZZ_OPENAI_BASE_URL": upstreams.openai.url + "/v1",
    }
    with BuzzProcess(tmp_path_factory.mktemp("strict") / "data", upstreams.anthropic.url, env=env) as process:
        yield process


@pytest.fixture
def fakes(upstreams: Upstreams) -> Iterator[Upstreams]:
    upstreams.clear()
    yield upstreams
    upstreams.clear()


@pytest.fixture(scope="module")
def key(gateway: BuzzProcess) -> str:
    return gateway.create_key(project="strict")


def _only(fake: FakeAnthropic | FakeGoogle | FakeOpenAI) -> Any:
    [seen] = fake.requests
    return seen


# --- credentials ----------------------------------------------------------------------------


def test_a_key_in_the_query_never_reaches_anthropic(gateway: BuzzProcess, fakes: Upstreams, key: str) -> None:
    path = f"/v1/messages?beta=true&key={key}&x=%2Fy&key=sk-ant-someone-else&b=%20c+d&&flag"
    status, _, _ = raw_post(gateway.url, path, MESSAGE, {"x-api-key": key})
    assert status == 200
    seen = _only(fakes.anthropic)
    assert seen.query_string == "beta=true&x=%2Fy&b=%20c+d&&flag"  # every other byte as sent
    assert seen.header("x-api-key") == UPSTREAM_KEY
    assert key.encode() not in seen.raw_head


def test_gemini_key_in_the_header_drops_the_query_key(gateway: BuzzProcess, fakes: Upstreams, key: str) -> None:
    path = f"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={key}"
    status, _, _ = raw_post(gateway.url, path, GENERATE, {"x-goog-api-key": key})
    assert status == 200
    seen = _only(fakes.google)
    assert (seen.query_string, seen.header("x-goog-api-key")) == ("alt=sse", GEMINI_KEY)
    assert key.encode() not in seen.raw_head


def test_gemini_key_in_the_query_is_replaced_once(gateway: BuzzProcess, fakes: Upstreams, key: str) -> None:
    path = f"/v1/models/gemini-2.5-flash:generateContent?key={key}&alt=json&key=again&%6Bey=encoded&keys=kept"
    status, _, _ = raw_post(gateway.url, path, GENERATE, {})
    assert status == 200
    seen = _only(fakes.google)
    assert seen.query_string == f"key={GEMINI_KEY}&alt=json&keys=kept"
    assert seen.header("x-goog-api-key") is None


def test_gemini_key_as_bearer_goes_up_in_googles_header(gateway: BuzzProcess, fakes: Upstreams, key: str) -> None:
    path = "/v1beta/models/gemini-2.5-flash:generateContent"
    status, _, _ = raw_post(gateway.url, path, GENERATE, {"authorization": f"Bearer {key}"})
    assert status == 200
    seen = _only(fakes.google)
    assert (seen.header("x-goog-api-key"), seen.header("authorization")) == (GEMINI_KEY, None)


def test_the_openai_surface_drops_a_query_key(gateway: BuzzProcess, fakes: Upstreams, key: str) -> None:
    status, _, _ = raw_post(
        gateway.url, "/v1/chat/completions?key=abc&trace=1", CHAT, {"authorization": f"Bearer {key}"}
    )
    assert status == 200
    seen = _only(fakes.openai)
    assert (seen.query_string, seen.header("authorization")) == ("trace=1", f"Bearer {OPENAI_KEY}")


def test_credential_headers_and_buzz_keys_never_travel(gateway: BuzzProcess, fakes: Upstreams, key: str) -> None:
    other = key[:-1] + ("A" if key[-1] != "A" else "B")  # another buzz key's shape
    headers = {
        "x-api-key": key,
        "api-key": "azure-style-secret",
        "cookie": "session=abc",
        "proxy-authorization": "Basic dXNlcjpwYXNz",
        "x-goog-api-key": "google-secret",
        "x-trace": f"copied {other} here",
        "x-kept": "buzz-client/1.0",
    }
    path = f"/v1/messages?session={other}&q=buzz-notakey"
    status, _, _ = raw_post(gateway.url, path, MESSAGE, headers)
    assert status == 200
    seen = _only(fakes.anthropic)
    received = {name.decode().lower() for name, _ in seen.raw_headers}
    assert received.isdisjoint({"api-key", "cookie", "proxy-authorization", "x-goog-api-key", "x-trace"})
    assert (seen.header("x-api-key"), seen.header("x-kept")) == (UPSTREAM_KEY, "buzz-client/1.0")
    assert seen.query_string == "q=buzz-notakey"
    assert key.encode() not in seen.raw_head and other.encode() not in seen.raw_head


def test_a_buzz_key_in_the_path_is_refused(gateway: BuzzProcess, fakes: Upstreams, key: str) -> None:
    status, _, data = _get(gateway.url, f"/v1beta/models/{key}", {"x-goog-api-key": key})
    assert status == 400
    assert json.loads(data)["error"]["details"][0]["reason"] == "gateway_invalid_request_error"
    assert fakes.google.requests == []


# --- client mistakes are 400s ------------------------------------------------------------


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("path", "body", "auth"),
    [
        ("/v1/messages", b'{"model":"claude-sonnet-4-6","metadata":' + _deep(100_000) + b"}", "x-api-key"),
        ("/v1/messages", b'{"model":"claude-sonnet-4-6","messages":' + _deep(100_000) + b"}", "x-api-key"),
        ("/v1/chat/completions", b'{"model":"gpt-5.5","stream_options":' + _deep(100_000) + b"}", "authorization"),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            b'{"generationConfig":' + _deep(100_000) + b"}",
            "x-goog-api-key",
        ),
    ],
)
def test_deeply_nested_json_is_a_400(
    gateway: BuzzProcess, fakes: Upstreams, key: str, path: str, body: bytes, auth: str
) -> None:
    value = f"Bearer {key}" if auth == "authorization" else key
    status, headers, data = raw_post(gateway.url, path, body, {auth: value})
    received = {name.lower(): value for name, value in headers}
    assert (status, received["x-should-retry"]) == (400, "false")
    assert b"gateway_invalid_request_error" in data and b"nested too deeply" in data
    assert (fakes.anthropic.requests, fakes.google.requests, fakes.openai.requests) == ([], [], [])


def test_invalid_utf8_in_the_model_is_a_400(gateway: BuzzProcess, fakes: Upstreams, key: str) -> None:
    status, headers, data = raw_post(gateway.url, "/v1/messages", b'{"model":"claude-\xff\xfe"}', {"x-api-key": key})
    assert status == 400 and dict(headers)["x-should-retry"] == "false"
    assert json.loads(data)["error"]["type"] == "gateway_invalid_request_error"
    assert fakes.anthropic.requests == []


@pytest.mark.parametrize(
    "model",
    ["claude-" + "a" * 122, "claude-opus 4", "claude-<script>", "gemini-2.5-pro\n", "claude-\u00e9t\u00e9"],
)
def test_a_model_that_is_not_an_identifier_is_refused_by_name(
    gateway: BuzzProcess, fakes: Upstreams, key: str, model: str
) -> None:
    project = f"text-{uuid.uuid4().hex[:8]}"
    own = gateway.create_key(project=project)
    body = json.dumps({"model": model, "max_tokens": 5, "messages": []}).encode()
    status, _, data = raw_post(gateway.url, "/v1/messages", body, {"x-api-key": own})
    error = json.loads(data)["error"]
    assert (status, error["type"]) == (400, "gateway_invalid_request_error")
    assert error["message"].startswith("model: ")
    assert fakes.anthropic.requests == []
    [row] = gateway.ledger(count=1, where=lambda r: r["project"] == project)
    assert (row["model"], row["provider"], row["status"]) == (None, None, 400)


def test_a_gemini_path_model_that_is_not_an_identifier_is_refused(
    gateway: BuzzProcess, fakes: Upstreams, key: str
) -> None:
    status, _, data = raw_post(
        gateway.url, "/v1beta/models/gemini-%3Cb%3E:generateContent", GENERATE, {"x-goog-api-key": key}
    )
    assert status == 400
    assert json.loads(data)["error"]["message"].startswith("model: ")
    assert fakes.google.requests == []


def test_identifiers_up_to_128_characters_are_kept(gateway: BuzzProcess, fakes: Upstreams) -> None:
    model = "claude-" + "a" * 121  # 128 characters
    own = gateway.create_key(project="text-128")
    body = json.dumps({"model": model, "max_tokens": 5, "messages": []}).encode()
    fakes.anthropic.enqueue(Reply(body=b"{}", headers=[("request-id", "req_" + "Z" * 124)]))
    assert raw_post(gateway.url, "/v1/messages", body, {"x-api-key": own})[0] == 200
    [row] = gateway.ledger(count=1, where=lambda r: r["project"] == "text-128")
    assert (row["model"], row["upstream_request_id"]) == (model, "req_" + "Z" * 124)


@pytest.mark.parametrize("request_id", ["req <script>", "req_" + "x" * 200, "req_\u00e9"])
def test_an_upstream_request_id_that_is_not_an_identifier_is_not_kept(
    gateway: BuzzProcess, fakes: Upstreams, request_id: str
) -> None:
    project = f"rid-{uuid.uuid4().hex[:8]}"
    own = gateway.create_key(project=project)
    fakes.anthropic.enqueue(Reply(body=b"{}", headers=[("request-id", request_id)]))
    status, _, _ = raw_post(gateway.url, "/v1/messages", MESSAGE, {"x-api-key": own})
    assert status == 200
    [row] = gateway.ledger(count=1, where=lambda r: r["project"] == project)
    assert row["upstream_request_id"] is None and row["status"] == 200


def _get(url: str, target: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", target, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheaders(), data
