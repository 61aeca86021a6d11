"""Every other vendor route passes through: files and batches with the real SDKs, byte for byte
both ways, the upload limit, the routes' rows, and the hints for common mistakes.

A real buzz process in front of a fake Anthropic and a fake OpenAI that record every byte.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import anthropic
import openai
import pytest

from fakes.fake_anthropic import FakeAnthropic
from fakes.fake_openai import FakeOpenAI
from fakes.replies import Reply, dumps
from support import UPSTREAM_KEY, BuzzProcess, raw_exchange

OPENAI_UPSTREAM_KEY = "sk-openai-upstream-for-tests"
UPLOAD_LIMIT = 64 * 1024
BINARY = "application/octet-stream"


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic, openai_fake: FakeOpenAI
) -> Iterator[BuzzProcess]:
    env = {
        "OPENAI_API_KEY": OPENAI_UPSTREAM_KEY,
        "BUZZ_OPENAI_BASE_URL": openai_fake.url + "/v1",
        "BUZZ_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
    }
    with BuzzProcess(tmp_path_factory.mktemp("other") / "data", fake_session.url, env) as process:
        yield process


@pytest.fixture
def oai(openai_fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    openai_fake.clear()
    yield openai_fake
    openai_fake.clear()
    while openai_fake.pending_replies:
        openai_fake.drain_replies()


@pytest.fixture(scope="module")
def key(gateway: BuzzProcess) -> str:
    return gateway.create_key(project="files", name="other routes")


def _json(obj: object, status: int = 200) -> Reply:
    return Reply(status=status, body=dumps(obj))


def test_anthropic_files_upload_list_and_download_with_the_sdk(
    gateway: BuzzProcess, fake: FakeAnthropic, key: str
) -> None:
    content = os.urandom(20_000)
    file_object = {
        "id": "file_011CNha8iCJcU1wXNR6q4V8w",
        "type": "file",
        "filename": "notes.bin",
        "mime_type": BINARY,
        "size_bytes": len(content),
        "created_at": "2026-12-06T10:00:00Z",
        "downloadable": True,
    }
    fake.enqueue(
        _json(file_object),
        _json({"data": [file_object], "first_id": file_object["id"], "last_id": file_object["id"], "has_more": False}),
        Reply(body=content, headers=[("content-type", BINARY)]),
    )
    client = anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0)
    uploaded = client.beta.files.upload(file=("notes.bin", content, BINARY))
    listed = client.beta.files.list()
    downloaded = client.beta.files.download(uploaded.id)

    assert uploaded.id == file_object["id"] and uploaded.size_bytes == len(content)
    assert [f.id for f in listed.data] == [file_object["id"]]
    assert downloaded.read() == content
    upload, listing, download = fake.requests
    assert (upload.method, upload.path) == ("POST", "/v1/files")
    assert content in upload.body  # the multipart body, as the SDK built it
    assert upload.header("content-length") == str(len(upload.body))
    assert upload.header("anthropic-version") is not None  # what sends /v1/files to Anthropic
    assert upload.header("authorization") == f"Bearer {UPSTREAM_KEY}" and key not in repr(upload.raw_headers)
    assert (listing.method, listing.path) == ("GET", "/v1/files")
    assert (download.method, download.path) == ("GET", f"/v1/files/{file_object['id']}/content")

    rows = gateway.ledger(3, where=lambda row: row["surface"] == "anthropic" and row["model"] is None)
    assert [(r["status"], r["provider"], r["cost_nanos"]) for r in rows[-3:]] == [(200, "anthropic", 0)] * 3


def test_openai_files_and_batches_with_the_sdk(gateway: BuzzProcess, oai: FakeOpenAI, key: str) -> None:
    lines = b'{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4.1-mini"}}\n'
    file_object = {
        "id": "file-abc123",
        "object": "file",
        "bytes": len(lines),
        "created_at": 1765000000,
        "filename": "batch.jsonl",
        "purpose": "batch",
    }
    batch_object = {
        "id": "batch_abc123",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-abc123",
        "completion_window": "24h",
        "status": "validating",
        "created_at": 1765000001,
    }
    oai.enqueue(_json(file_object), _json(batch_object), Reply(body=lines, headers=[("content-type", BINARY)]))
    client = openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)
    created = client.files.create(file=("batch.jsonl", lines), purpose="batch")
    batch = client.batches.create(input_file_id=created.id, endpoint="/v1/chat/completions", completion_window="24h")
    content = client.files.content(created.id)

    assert (created.id, batch.id, batch.status) == ("file-abc123", "batch_abc123", "validating")
    assert content.read() == lines
    upload, create, download = oai.requests
    assert (upload.method, upload.path) == ("POST", "/v1/files")
    assert lines in upload.body and b'name="purpose"' in upload.body
    assert upload.header("authorization") == f"Bearer {OPENAI_UPSTREAM_KEY}"
    assert (create.method, create.path) == ("POST", "/v1/batches")
    assert create.json() == {
        "input_file_id": "file-abc123",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    assert (download.method, download.path) == ("GET", "/v1/files/file-abc123/content")


def test_bytes_pass_through_both_ways_on_another_route(gateway: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    """Method, path, query, headers and body up; status, headers and body down, byte for byte."""
    body = b'{"requests":[{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":8}}],  "x":"\xc3\xa9"}'
    answer = b'{"id":"msgbatch_01","type":"message_batch","processing_status":"in_progress" , "z":1}'
    fake.enqueue(Reply(status=201, body=answer, headers=[("x-vendor-thing", " spaced  value ")]))
    request = (
        b"POST /v1/messages/batches?beta=true&x=%2F HTTP/1.1\r\nHost: buzz\r\n"
        b"anthropic-version: 2023-06-01\r\nx-api-key: " + key.encode() + b"\r\n"
        b"anthropic-beta: message-batches-2024-09-24\r\ncontent-type: application/json\r\n"
        b"x-custom-header: kept\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body
    response = raw_exchange(gateway.port, request)

    [seen] = fake.requests
    assert (seen.method, seen.path, seen.query_string) == ("POST", "/v1/messages/batches", "beta=true&x=%2F")
    assert seen.body == body
    assert seen.header("x-custom-header") == "kept" and seen.header("x-api-key") == UPSTREAM_KEY
    assert seen.header("content-length") == str(len(body))
    head, _, got = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 ")
    assert b"\r\nx-vendor-thing: spaced  value" in head.lower()
    assert got == answer


ROUTES = [
    # (vendor, method, path and query, body)
    ("anthropic", "GET", "/v1/files?limit=2&after_id=file_1", b""),
    ("anthropic", "DELETE", "/v1/files/file_011", b""),
    ("anthropic", "GET", "/v1/files/file_011/content", b""),
    ("anthropic", "GET", "/v1/skills?beta=true", b""),  # a route newer than buzz
    ("openai", "POST", "/v1/moderations", b'{"input":"hello \\u00e9","model":"omni-moderation-latest"}'),
    ("openai", "POST", "/v1/audio/speech", b'{"model":"gpt-4o-mini-tts","input":"hi","voice":"alloy"}'),
    ("openai", "POST", "/v1/uploads/upload_1/parts", b"--b\r\nraw part bytes\r\n--b--\r\n"),
    ("openai", "GET", "/v1/batches?limit=1", b""),
    ("openai", "DELETE", "/v1/files/file-1", b""),
]


@pytest.mark.parametrize(("vendor", "method", "target", "body"), ROUTES)
def test_every_other_route_passes_bytes_both_ways(
    gateway: BuzzProcess,
    fake: FakeAnthropic,
    oai: FakeOpenAI,
    key: str,
    vendor: str,
    method: str,
    target: str,
    body: bytes,
) -> None:
    upstream = fake if vendor == "anthropic" else oai
    answer = os.urandom(3000)  # any bytes at all, as an audio file would be
    upstream.enqueue(Reply(status=207, body=answer, headers=[("content-type", BINARY), ("x-kept", "yes")]))
    announce = b"anthropic-version: 2023-06-01\r\n" if vendor == "anthropic" else b""
    request = (
        b"%s %s HTTP/1.1\r\nHost: buzz\r\n%sauthorization: Bearer %s\r\nx-trace: t-1\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n"
        % (method.encode(), target.encode(), announce, key.encode(), len(body))
    ) + body
    response = raw_exchange(gateway.port, request)

    [seen] = upstream.requests
    path, _, query = target.partition("?")
    assert (seen.method, seen.path, seen.query_string) == (method, path, query)
    assert seen.body == body and seen.header("x-trace") == "t-1"
    assert key not in repr(seen.raw_headers)
    head, _, got = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 207 ") and b"\r\nx-kept: yes" in head
    assert got == answer


def test_an_upload_over_its_limit_is_refused_and_the_upstream_gets_no_whole_body(
    gateway: BuzzProcess, fake: FakeAnthropic, key: str
) -> None:
    auth = b"anthropic-version: 2023-06-01\r\nx-api-key: " + key.encode() + b"\r\n"
    # Declared too large: refused before anything goes upstream.
    declared = raw_exchange(
        gateway.port,
        b"POST /v1/files HTTP/1.1\r\nHost: buzz\r\n" + auth + b"content-length: %d\r\n"
        b"connection: close\r\n\r\n" % (UPLOAD_LIMIT + 1) + b"x" * 100,
    )
    assert declared.startswith(b"HTTP/1.1 413 ")
    assert b"gateway_request_too_large" in declared
    assert fake.requests == []
    # Chunked, no length: refused once the limit is passed, and the upstream's copy is cut short.
    chunk = b"y" * 16384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(UPLOAD_LIMIT // len(chunk) + 2))
    streamed = raw_exchange(
        gateway.port,
        b"POST /v1/files HTTP/1.1\r\nHost: buzz\r\n" + auth + b"transfer-encoding: chunked\r\n"
        b"connection: close\r\n\r\n" + chunks + b"0\r\n\r\n",
    )
    assert streamed.startswith(b"HTTP/1.1 413 ")
    assert all(len(seen.body) <= UPLOAD_LIMIT for seen in fake.requests)
    rows = gateway.ledger(2, where=lambda row: row["status"] == 413 and row["surface"] == "anthropic")
    assert len(rows) >= 2


def test_images_are_passed_to_openai_and_their_row_is_unpriced(gateway: BuzzProcess, oai: FakeOpenAI, key: str) -> None:
    oai.enqueue(_json({"created": 1765000000, "data": [{"b64_json": "aGk="}]}))
    client = openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)
    image = client.images.generate(model="gpt-image-1", prompt="a bee")
    assert image.data is not None and image.data[0].b64_json == "aGk="
    [seen] = oai.requests
    assert (seen.method, seen.path) == ("POST", "/v1/images/generations")
    unpriced = gateway.ledger(1, where=lambda row: row["surface"] == "openai" and row["cost_nanos"] is None)
    rows = gateway.ledger(where=lambda row: row["surface"] == "openai" and row["status"] == 200)
    assert len(unpriced) == 1 and unpriced[0]["provider"] == "openai"  # unknown, not $0
    assert all(row["cost_nanos"] == 0 for row in rows if row["id"] != unpriced[0]["id"])  # files, batches: free


def test_mistakes_get_a_hint(gateway: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    get_messages = raw_exchange(
        gateway.port, b"GET /v1/messages HTTP/1.1\r\nHost: buzz\r\nx-api-key: k\r\nconnection: close\r\n\r\n"
    )
    head, _, body = get_messages.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ") and b"\r\nallow: post" in head.lower()
    assert json.loads(body)["error"]["type"] == "gateway_method_not_allowed_error"

    client = anthropic.Anthropic(api_key=key, base_url=gateway.url + "/v1", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert "drop /v1 from the client's base URL" in str(caught.value)
    assert fake.requests == []


def test_the_home_page_points_to_the_models_and_the_console(gateway: BuzzProcess) -> None:
    page = raw_exchange(gateway.port, b"GET / HTTP/1.1\r\nHost: buzz\r\nconnection: close\r\n\r\n")
    head, _, body = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"text/html" in head
    assert b'href="/models"' in body and b'href="/console"' in body
    headed = raw_exchange(gateway.port, b"HEAD / HTTP/1.1\r\nHost: buzz\r\nconnection: close\r\n\r\n")
    head, _, body = headed.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b""


def test_an_unknown_path_without_anthropic_version_is_still_a_404(gateway: BuzzProcess, key: str) -> None:
    client = openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.get("/vector_stores", cast_to=object)


def test_a_client_that_leaves_mid_upload_is_recorded_and_nothing_whole_goes_up(
    gateway: BuzzProcess, fake: FakeAnthropic, key: str
) -> None:
    half = b"z" * 5000
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: buzz\r\nanthropic-version: 2023-06-01\r\nx-api-key: "
            + key.encode()
            + b"\r\ncontent-length: 10000\r\n\r\n"
            + half
        )
        sock.shutdown(socket.SHUT_WR)  # gone, with half the body it announced
        while sock.recv(65536):
            pass
    [row] = gateway.ledger(1, where=lambda row: row["status"] == 499 and row["surface"] == "anthropic")
    assert row["error_type"] == "client_disconnected"
    assert all(len(seen.body) < 10000 for seen in fake.requests)  # the upstream never had it whole


@pytest.mark.parametrize(
    "target",
    [
        "/v1/messages/batches/msgbatch_a/../msgbatch_b/results",
        "/v1/files/",
        "/v1//files",
        "/v1/files/%2e%2e/x",
        "/v1/files/.",
    ],
)
def test_a_path_that_could_name_another_route_is_refused(
    gateway: BuzzProcess, fake: FakeAnthropic, key: str, target: str
) -> None:
    response = raw_exchange(
        gateway.port,
        b"GET %s HTTP/1.1\r\nHost: buzz\r\nanthropic-version: 2023-06-01\r\nx-api-key: %s\r\n"
        b"connection: close\r\n\r\n" % (target.encode(), key.encode()),
    )
    assert response.startswith(b"HTTP/1.1 400 ") and b"gateway_invalid_request_error" in response
    assert fake.requests == []
