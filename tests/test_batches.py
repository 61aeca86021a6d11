"""Message Batches through buzz: the real SDK end to end, `results_url` the one value changed,
results billed exactly once at the batch price, and a batch reachable only from its project.

A real buzz process in front of the fake Anthropic, which answers what each test queues.
"""

from __future__ import annotations

import gzip
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from buzz.proxy.auth import generate_key
from fakes.abuse import gzip_bomb
from fakes.fake_anthropic import FakeAnthropic
from fakes.fake_openai import FakeOpenAI
from fakes.replies import Reply, dumps
from support import BuzzProcess, raw_exchange, wait_until

VENDOR_RESULTS = "https://api.anthropic.com/v1/messages/batches/{id}/results"
SURFACE = "anthropic_batch"
# claude-haiku-4-5 in USD per million tokens: input 1, output 5, 5-minute cache write 1.25,
# 1-hour cache write 2, cache read 0.10. A batch pays half of each.
HAIKU = "claude-haiku-4-5"


def _batch(batch_id: str, status: str = "ended", results: bool = True) -> dict[str, Any]:
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {"processing": 0, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0},
        "created_at": "2026-12-06T10:00:00Z",
        "expires_at": "2026-12-07T10:00:00Z",
        "ended_at": "2026-12-06T10:05:00Z" if status == "ended" else None,
        "cancel_initiated_at": None,
        "archived_at": None,
        "results_url": VENDOR_RESULTS.format(id=batch_id) if results else None,
    }


def _succeeded(custom_id: str, usage: dict[str, Any]) -> bytes:
    message = {
        "id": f"msg_{custom_id}",
        "type": "message",
        "role": "assistant",
        "model": HAIKU,
        "content": [{"type": "text", "text": "done"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    return dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}) + b"\n"


# Three succeeded results and one errored; the batch prices, to the nano-dollar, are worked out
# by hand from the list prices above, halved.
RESULTS = [
    (_succeeded("r1", {"input_tokens": 1000, "output_tokens": 333, "cache_read_input_tokens": 77}), 1_336_350),
    (
        _succeeded(
            "r2",
            {
                "input_tokens": 10,
                "output_tokens": 20,
                "cache_creation_input_tokens": 300,
                "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
            },
        ),
        # 10 * 1000 + 20 * 5000 + 100 * 1250 + 200 * 2000 = 635,000, halved
        317_500,
    ),
    (
        dumps({"custom_id": "r3", "result": {"type": "errored", "error": {"type": "error"}}}) + b"\n",
        0,
    ),
    (_succeeded("r4", {"input_tokens": 1, "output_tokens": 1}), 3_000),  # 1000 + 5000, halved
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic) -> Iterator[BuzzProcess]:
    with BuzzProcess(tmp_path_factory.mktemp("batches") / "data", fake_session.url) as process:
        yield process


def _client(gateway: BuzzProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0)


def _create(gateway: BuzzProcess, fake: FakeAnthropic, key: str, batch_id: str) -> None:
    fake.enqueue(Reply(body=dumps(_batch(batch_id, "in_progress", results=False))))
    batch = _client(gateway, key).messages.batches.create(
        requests=[{"custom_id": "r1", "params": {"model": HAIKU, "max_tokens": 64, "messages": []}}]
    )
    assert batch.id == batch_id


def _batch_rows(gateway: BuzzProcess, project: str, count: int | None = None) -> list[dict[str, Any]]:
    return gateway.ledger(count, where=lambda row: row["surface"] == SURFACE and row["project"] == project)


def test_the_sdk_creates_retrieves_cancels_and_reads_results_through_buzz(
    gateway: BuzzProcess, fake: FakeAnthropic
) -> None:
    key = gateway.create_key(project="acme")
    _create(gateway, fake, key, "msgbatch_sdk")
    client = _client(gateway, key)

    fake.enqueue(Reply(body=dumps(_batch("msgbatch_sdk"))))
    retrieved = client.messages.batches.retrieve("msgbatch_sdk")
    assert retrieved.results_url == f"{gateway.url}/v1/messages/batches/msgbatch_sdk/results"

    jsonl = b"".join(line for line, _ in RESULTS)
    fake.enqueue(
        Reply(body=dumps(_batch("msgbatch_sdk"))), Reply(body=jsonl, headers=[("content-type", "application/binary")])
    )
    results = list(client.messages.batches.results("msgbatch_sdk"))
    assert [r.custom_id for r in results] == ["r1", "r2", "r3", "r4"]
    assert [r.result.type for r in results] == ["succeeded", "succeeded", "errored", "succeeded"]

    fake.enqueue(Reply(body=dumps(_batch("msgbatch_sdk", "canceling", results=False))))
    assert client.messages.batches.cancel("msgbatch_sdk").processing_status == "canceling"

    paths = [(r.method, r.path) for r in fake.requests]
    assert paths == [
        ("POST", "/v1/messages/batches"),
        ("GET", "/v1/messages/batches/msgbatch_sdk"),
        ("GET", "/v1/messages/batches/msgbatch_sdk"),
        ("GET", "/v1/messages/batches/msgbatch_sdk/results"),
        ("POST", "/v1/messages/batches/msgbatch_sdk/cancel"),
    ]
    rows = _batch_rows(gateway, "acme", 3)
    assert sorted((row["model"], row["cost_nanos"]) for row in rows) == sorted(
        (HAIKU, cost) for _, cost in RESULTS if cost
    )
    assert {(row["key_id"], row["project"], row["status"], row["provider"]) for row in rows} == {
        (rows[0]["key_id"], "acme", 200, "anthropic")
    }
    # The reports and the export show batch spend under its own surface.
    usage = gateway.cli("usage", "--by", "surface", "--project", "acme", "--json")
    assert usage.returncode == 0, usage.stderr
    assert SURFACE in usage.stdout
    export = gateway.cli("export", "--since", "1d", "--format", "jsonl", "--project", "acme")
    exported = [json.loads(line) for line in export.stdout.splitlines()]
    batch_costs = sorted(int(line["cost_nanos"]) for line in exported if line["surface"] == SURFACE)
    assert batch_costs == sorted(cost for _, cost in RESULTS if cost)


def test_results_url_is_the_only_value_changed_in_a_batch_object(gateway: BuzzProcess, fake: FakeAnthropic) -> None:
    key = gateway.create_key(project="acme")
    _create(gateway, fake, key, "msgbatch_bytes")
    sent = dumps(_batch("msgbatch_bytes")).replace(b'"id":', b'"id" :  ', 1)  # odd spacing stays odd
    listing = b'{"data":[' + dumps(_batch("msgbatch_bytes")) + b"," + dumps(_batch("msgbatch_other", results=False))
    listing += b'],"has_more":false,"first_id":"msgbatch_bytes","last_id":"msgbatch_other"}'
    fake.enqueue(Reply(body=sent), Reply(body=listing))
    auth = b"anthropic-version: 2023-06-01\r\nx-api-key: " + key.encode() + b"\r\nconnection: close\r\n\r\n"
    one = raw_exchange(
        gateway.port, b"GET /v1/messages/batches/msgbatch_bytes HTTP/1.1\r\nHost: gw.example:8080\r\n" + auth
    )
    many = raw_exchange(gateway.port, b"GET /v1/messages/batches?limit=2 HTTP/1.1\r\nHost: gw.example:8080\r\n" + auth)

    ours = b"http://gw.example:8080/v1/messages/batches/msgbatch_bytes/results"
    theirs = VENDOR_RESULTS.format(id="msgbatch_bytes").encode()
    for response, upstream in ((one, sent), (many, listing)):
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"content-length: {len(body)}".encode() in head.lower()
        assert body.count(ours) == 1 and theirs not in body
        assert body.replace(ours, b"") == upstream.replace(theirs, b"")  # all else byte for byte


def test_results_fetched_twice_are_billed_once(gateway: BuzzProcess, fake: FakeAnthropic) -> None:
    key = gateway.create_key(project="twice")
    _create(gateway, fake, key, "msgbatch_twice")
    jsonl = b"".join(line for line, _ in RESULTS)
    auth = b"anthropic-version: 2023-06-01\r\nx-api-key: " + key.encode() + b"\r\nconnection: close\r\n\r\n"
    request = b"GET /v1/messages/batches/msgbatch_twice/results HTTP/1.1\r\nHost: buzz\r\n" + auth
    for _ in range(2):
        fake.enqueue(Reply(body=jsonl, headers=[("content-type", "application/binary")]))
        assert raw_exchange(gateway.port, request).endswith(jsonl)
    fetches = gateway.ledger(3, where=lambda row: row["project"] == "twice" and row["surface"] == "anthropic")
    assert [row["status"] for row in fetches] == [200, 200, 200]  # the create and both fetches
    rows = _batch_rows(gateway, "twice")
    assert sorted(row["cost_nanos"] for row in rows) == sorted(cost for _, cost in RESULTS if cost)


def test_a_cut_download_bills_what_passed_and_the_next_fetch_the_rest(
    gateway: BuzzProcess, fake: FakeAnthropic
) -> None:
    key = gateway.create_key(project="cut")
    _create(gateway, fake, key, "msgbatch_cut")
    lines = [line for line, _ in RESULTS]
    # Cut inside the second result: only the first was seen whole.
    pieces = [lines[0], lines[1][:40], lines[1][40:], *lines[2:]]
    fake.enqueue(Reply(chunks=pieces, drop_after_chunks=2, headers=[("content-type", "application/binary")]))
    auth = b"anthropic-version: 2023-06-01\r\nx-api-key: " + key.encode() + b"\r\nconnection: close\r\n\r\n"
    request = b"GET /v1/messages/batches/msgbatch_cut/results HTTP/1.1\r\nHost: buzz\r\n" + auth
    cut = raw_exchange(gateway.port, request)
    assert lines[0] in cut and lines[1] not in cut
    [first] = _batch_rows(gateway, "cut", 1)
    assert first["cost_nanos"] == RESULTS[0][1]

    fake.enqueue(Reply(body=b"".join(lines), headers=[("content-type", "application/binary")]))
    assert raw_exchange(gateway.port, request).endswith(b"".join(lines))
    rows = _batch_rows(gateway, "cut", 3)
    assert sorted(row["cost_nanos"] for row in rows) == sorted(cost for _, cost in RESULTS if cost)


def test_a_batch_is_reachable_only_from_its_project(gateway: BuzzProcess, fake: FakeAnthropic) -> None:
    owner, stranger = gateway.create_key(project="owner"), gateway.create_key(project="stranger")
    _create(gateway, fake, owner, "msgbatch_mine")
    fake.clear()
    for call in (
        lambda c: c.messages.batches.retrieve("msgbatch_mine"),
        lambda c: c.messages.batches.cancel("msgbatch_mine"),
        lambda c: c.messages.batches.delete("msgbatch_mine"),
        lambda c: c.messages.batches.retrieve("msgbatch_never_made_here"),
    ):
        with pytest.raises(anthropic.NotFoundError) as caught:
            call(_client(gateway, stranger))
        assert json.loads(caught.value.response.text)["error"]["type"] == "gateway_not_found_error"
    assert fake.requests == []


def test_a_batch_is_refused_before_it_is_sent_when_the_balance_is_spent(
    gateway: BuzzProcess, fake: FakeAnthropic
) -> None:
    made = gateway.cli("projects", "create", "broke", "--prepaid")
    assert made.returncode == 0, made.stderr
    key = gateway.create_key(project="broke")
    with pytest.raises(anthropic.APIStatusError) as caught:
        _client(gateway, key).messages.batches.create(
            requests=[{"custom_id": "r1", "params": {"model": HAIKU, "max_tokens": 64, "messages": []}}]
        )
    assert caught.value.status_code == 402
    assert fake.requests == []


# gpt-4o-mini in USD per million tokens: input 0.15, cached input 0.075, output 0.60; a batch
# pays half. 1000 prompt tokens of which 200 cached, and 100 completion tokens:
# 800 * 150 + 200 * 75 + 100 * 600 = 195,000 nano-dollars, halved.
OPENAI_RESULTS = [
    (
        b'{"id":"batch_req_1","custom_id":"o1","response":{"status_code":200,"request_id":"r","body":'
        b'{"id":"chatcmpl-1","object":"chat.completion","created":1765000000,"model":"gpt-4o-mini-2024-07-18",'
        b'"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":100,'
        b'"prompt_tokens_details":{"cached_tokens":200}}}},"error":null}\n',
        97_500,
    ),
    (
        b'{"id":"batch_req_2","custom_id":"o2","response":{"status_code":400,"request_id":"r","body":'
        b'{"error":{"message":"bad","type":"invalid_request_error"}}},"error":null}\n',
        0,
    ),
    (
        b'{"id":"batch_req_3","custom_id":"o3","response":{"status_code":200,"request_id":"r","body":'
        b'{"id":"chatcmpl-3","object":"chat.completion","created":1765000000,"model":"gpt-4o-mini-2024-07-18",'
        b'"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":10}}},"error":null}\n',
        # 10 * 150 + 10 * 600 = 7,500, halved
        3_750,
    ),
]


def _openai_batch(batch_id: str, status: str, output: str | None) -> bytes:
    return dumps(
        {
            "id": batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-in",
            "completion_window": "24h",
            "status": status,
            "output_file_id": output,
            "created_at": 1765000000,
        }
    )


def test_openai_batch_results_are_billed_once_through_the_output_file(
    tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic
) -> None:

    with FakeOpenAI() as oai:
        env = {"OPENAI_API_KEY": "sk-openai-up", "BUZZ_OPENAI_BASE_URL": oai.url + "/v1"}
        data_dir = tmp_path_factory.mktemp("openai-batches") / "data"
        with BuzzProcess(data_dir, fake_session.url, env) as gateway:
            key, stranger = gateway.create_key(project="oa"), gateway.create_key(project="elsewhere")
            client = openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)
            oai.enqueue(Reply(body=_openai_batch("batch_o1", "validating", None)))
            batch = client.batches.create(
                input_file_id="file-in", endpoint="/v1/chat/completions", completion_window="24h"
            )
            oai.enqueue(Reply(body=_openai_batch("batch_o1", "completed", "file-out-1")))
            done = client.batches.retrieve(batch.id)
            assert done.output_file_id == "file-out-1"

            output = b"".join(line for line, _ in OPENAI_RESULTS)
            for _ in range(2):  # fetched twice, billed once
                oai.enqueue(Reply(body=output, headers=[("content-type", "application/octet-stream")]))
                assert client.files.content("file-out-1").read() == output
            gateway.ledger(2, where=lambda row: row["surface"] == "openai_batch")
            fetches = gateway.ledger(4, where=lambda row: row["surface"] == "openai" and row["project"] == "oa")
            assert len(fetches) == 4  # create, retrieve and two fetches, each with its row
            rows = gateway.ledger(where=lambda row: row["surface"] == "openai_batch")
            assert sorted(row["cost_nanos"] for row in rows) == [3_750, 97_500]
            assert {(row["project"], row["provider"]) for row in rows} == {("oa", "openai")}

            # An output file fetched before any retrieve named it is read as results all the same,
            # billed once per file to the key that fetched it, and not again once a retrieve names it.
            second = OPENAI_RESULTS[0][0].replace(b'"o1"', b'"p1"')
            oai.enqueue(Reply(body=second))
            assert client.files.content("file-out-2").read() == second
            [early] = gateway.ledger(3, where=lambda row: row["surface"] == "openai_batch")[2:]
            assert (early["project"], early["cost_nanos"]) == ("oa", 97_500)
            oai.enqueue(Reply(body=_openai_batch("batch_o1", "completed", "file-out-2")), Reply(body=second))
            client.batches.retrieve("batch_o1")
            client.files.content("file-out-2").read()
            gateway.ledger(7, where=lambda row: row["surface"] == "openai" and row["project"] == "oa")
            assert len(gateway.ledger(where=lambda row: row["surface"] == "openai_batch")) == 3

            other = openai.OpenAI(api_key=stranger, base_url=gateway.url + "/v1", max_retries=0)
            oai.clear()
            with pytest.raises(openai.NotFoundError):
                other.files.content("file-out-1")
            with pytest.raises(openai.NotFoundError):
                other.batches.retrieve("batch_o1")
            assert oai.requests == []


def test_a_key_limited_to_some_models_cannot_batch_others(gateway: BuzzProcess, fake: FakeAnthropic) -> None:
    new = generate_key()
    store = gateway.store()
    store.create_key(new.key_id, "narrow", None, new.secret_hash, allowed_models=[HAIKU])
    store.close()
    client = _client(gateway, new.token)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.batches.create(
            requests=[
                {"custom_id": "ok", "params": {"model": HAIKU, "max_tokens": 8, "messages": []}},
                {"custom_id": "no", "params": {"model": "claude-opus-4-8", "max_tokens": 8, "messages": []}},
            ]
        )
    assert "claude-opus-4-8" in str(caught.value)
    assert all(b'"custom_id":"no"' not in seen.body for seen in fake.requests)  # never went up whole
    fake.clear()
    fake.enqueue(Reply(body=dumps(_batch("msgbatch_narrow", "in_progress", results=False))))
    made = client.messages.batches.create(
        requests=[{"custom_id": "ok", "params": {"model": HAIKU, "max_tokens": 8, "messages": []}}]
    )
    assert made.id == "msgbatch_narrow"


def test_a_compressed_batch_object_is_rewritten_and_compressed_again(gateway: BuzzProcess, fake: FakeAnthropic) -> None:
    key = gateway.create_key(project="acme")
    _create(gateway, fake, key, "msgbatch_gz")
    sent = dumps(_batch("msgbatch_gz"))
    fake.enqueue(Reply(body=sent, gzip=True))
    response = raw_exchange(
        gateway.port,
        b"GET /v1/messages/batches/msgbatch_gz HTTP/1.1\r\nHost: gw.example\r\nanthropic-version: 2023-06-01\r\n"
        b"x-api-key: " + key.encode() + b"\r\naccept-encoding: zstd, gzip;q=0.9, br;q=0.5\r\nconnection: close\r\n\r\n",
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    plain = gzip.decompress(body)
    ours = b"http://gw.example/v1/messages/batches/msgbatch_gz/results"
    assert plain == sent.replace(VENDOR_RESULTS.format(id="msgbatch_gz").encode(), ours)
    # Only codings buzz can read and write again were asked for: not zstd.
    assert fake.requests[-1].header("accept-encoding") == "gzip;q=0.9, br;q=0.5"


def test_results_buzz_cannot_read_are_relayed_counted_and_not_billed(
    tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic
) -> None:
    env = {"BUZZ_ADMIN_TOKEN": "admin-for-unread-results"}
    with BuzzProcess(tmp_path_factory.mktemp("unread") / "data", fake_session.url, env) as gateway:
        fake_session.clear()
        key = gateway.create_key(project="bomb")
        _create(gateway, fake_session, key, "msgbatch_bomb")
        bomb = gzip_bomb(512 * 1024 * 1024)  # a few hundred kilobytes that inflate to 512 MiB
        fake_session.enqueue(bomb)
        auth = b"anthropic-version: 2023-06-01\r\nx-api-key: " + key.encode() + b"\r\nconnection: close\r\n\r\n"
        response = raw_exchange(
            gateway.port, b"GET /v1/messages/batches/msgbatch_bomb/results HTTP/1.1\r\nHost: b\r\n" + auth
        )
        assert response.startswith(b"HTTP/1.1 200 ")  # relayed as it came
        request = urllib.request.Request(
            gateway.url + "/admin/api/counters", headers={"authorization": f"Bearer {env['BUZZ_ADMIN_TOKEN']}"}
        )
        assert wait_until(lambda: json.loads(urllib.request.urlopen(request).read()).get("batch_results_unread") == 1)
        assert _batch_rows(gateway, "bomb") == []
