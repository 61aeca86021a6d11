"""The access log: one line per request, with the route's template and never a secret."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from buzz.access_log import AccessLog
from buzz.counters import Counters
from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, wait_until
from test_fidelity import raw_post

CANARY = "CANARY-51d0-access-log"
BODY = json.dumps(
    {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": f"{CANARY} prompt"}]}
).encode()
TEXT_LINE = re.compile(
    r"(?P<time>\S+) (?P<method>[A-Z]+) (?P<route>\S+) (?P<status>\d{3}) request_id=(?P<request_id>\S+)"
    r" key_id=(?P<key_id>\S+) model=(?P<model>\S+) latency_ms=(?P<latency_ms>[\d.]+)"
    r" ttfb_ms=(?P<ttfb_ms>[\d.]+|-) bytes_in=(?P<bytes_in>\d+) bytes_out=(?P<bytes_out>\d+)"
)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _traffic(buzz: BuzzProcess) -> dict[str, Any]:
    """One request of each kind, a canary wherever a client could put one; what each got back."""
    key = buzz.create_key(project="logged")
    status, headers, body = raw_post(buzz.url, f"/v1/messages?beta=true&note={CANARY}", BODY, {"x-api-key": key})
    assert status == 200
    proxied = {"request_id": dict(headers)["x-buzz-request-id"], "bytes_out": len(body), "key": key}
    status, headers, body = raw_post(buzz.url, "/v1/messages", BODY, {"x-api-key": f"buzz-{CANARY}-secret"})
    assert status == 401
    refused = {"request_id": dict(headers)["x-buzz-request-id"], "bytes_out": len(body)}
    gemini = f"/v1beta/models/gemini-2.5-pro:generateContent?key={CANARY}"
    assert raw_post(buzz.url, gemini, b'{"contents":[]}', {})[0] == 401
    status, headers, _ = _get(f"{buzz.url}/v1/{CANARY}/files?after={CANARY}")
    assert status == 404
    missing = headers["x-buzz-request-id"]
    assert _get(f"{buzz.url}/healthz")[0] == 200
    assert _get(f"{buzz.url}/admin/api/keys/{CANARY}")[0] == 404  # the admin API is off
    assert _get(f"{buzz.url}/api/pricing?model={CANARY}")[0] == 200
    return {"proxied": proxied, "refused": refused, "missing": missing, "requests": 7}


def _lines(buzz: BuzzProcess, count: int, pattern: re.Pattern[bytes]) -> list[str]:
    """The access log's lines once there are `count`."""

    def found() -> list[str]:
        return [line.decode() for line in buzz.output().splitlines() if pattern.match(line)]

    assert wait_until(lambda: len(found()) >= count, timeout=15), buzz.output().decode(errors="replace")
    return found()


def _logged_traffic(buzz: BuzzProcess, pattern: re.Pattern[bytes]) -> tuple[dict[str, Any], list[str]]:
    """`_traffic`, and exactly the lines it was logged with."""
    # The one /healthz that found buzz started is logged first.
    before = len(_lines(buzz, 1, pattern))
    sent = _traffic(buzz)
    lines = _lines(buzz, before + sent["requests"], pattern)
    return sent, lines[before:]


def _key_id(key: str) -> str:
    return key.split("-")[1]


def test_text_lines_for_proxied_refused_unknown_and_health(tmp_path: Path, fake: FakeAnthropic) -> None:
    buzz = BuzzProcess(tmp_path / "data", fake.url).start()
    try:
        sent, lines = _logged_traffic(buzz, re.compile(rb"\d{4}-\d\d-\d\dT"))
    finally:
        buzz.stop()
    assert len(lines) == sent["requests"]
    fields = []
    for line in lines:
        match = TEXT_LINE.fullmatch(line)
        assert match, line
        fields.append(match.groupdict())
    by_route = {(f["method"], f["route"], f["status"]): f for f in fields}

    proxied = by_route[("POST", "/v1/messages", "200")]
    assert proxied["request_id"] == sent["proxied"]["request_id"]
    assert proxied["key_id"] == _key_id(sent["proxied"]["key"])
    assert proxied["model"] == "claude-sonnet-4-6"
    assert int(proxied["bytes_in"]) == len(BODY)
    assert int(proxied["bytes_out"]) == sent["proxied"]["bytes_out"]
    assert 0 <= float(proxied["ttfb_ms"]) <= float(proxied["latency_ms"])
    when = datetime.fromisoformat(proxied["time"])
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs(when.timestamp() - time.time()) < 3600  # the arrival time, not some other clock

    refused = by_route[("POST", "/v1/messages", "401")]
    assert refused["request_id"] == sent["refused"]["request_id"]
    assert int(refused["bytes_out"]) == sent["refused"]["bytes_out"]
    assert float(refused["ttfb_ms"]) <= float(refused["latency_ms"])
    assert (refused["key_id"], refused["model"]) == ("-", "-")
    assert int(refused["bytes_in"]) == len(BODY)
    assert ("POST", "/v1beta/models/{model}:generateContent", "401") in by_route

    missing = by_route[("GET", "-", "404")]
    assert missing["request_id"] == sent["missing"]

    health = by_route[("GET", "/healthz", "200")]
    assert (health["request_id"], health["key_id"], health["bytes_in"]) == ("-", "-", "0")
    assert health["bytes_out"] == str(len(b'{"status":"ok"}'))
    assert ("GET", "/admin/api/keys/{id}", "404") in by_route
    assert ("GET", "/api/pricing", "200") in by_route

    assert CANARY.encode() not in buzz.output()
    assert b"note=" not in buzz.output()


def test_json_lines_parse(tmp_path: Path, fake: FakeAnthropic) -> None:
    buzz = BuzzProcess(tmp_path / "data", fake.url, env={"BUZZ_ACCESS_LOG": "json"}).start()
    try:
        sent, lines = _logged_traffic(buzz, re.compile(rb"\{"))
    finally:
        buzz.stop()
    records = [json.loads(line) for line in lines]
    assert len(records) == sent["requests"]
    keys = ["time", "request_id", "key_id", "method", "route", "model", "status"]
    keys += ["latency_ms", "ttfb_ms", "bytes_in", "bytes_out"]
    assert all(list(record) == keys for record in records)
    [proxied] = [r for r in records if r["status"] == 200 and r["route"] == "/v1/messages"]
    assert proxied["request_id"] == sent["proxied"]["request_id"]
    assert proxied["key_id"] == _key_id(sent["proxied"]["key"])
    assert proxied["model"] == "claude-sonnet-4-6"
    assert (proxied["bytes_in"], proxied["bytes_out"]) == (len(BODY), sent["proxied"]["bytes_out"])
    assert datetime.fromisoformat(proxied["time"]).tzinfo is not None
    [missing] = [r for r in records if r["status"] == 404 and r["method"] == "GET" and r["route"] is None]
    assert missing["request_id"] == sent["missing"]
    assert CANARY.encode() not in buzz.output()


def test_off_writes_nothing(tmp_path: Path, fake: FakeAnthropic) -> None:
    buzz = BuzzProcess(tmp_path / "data", fake.url, env={"BUZZ_ACCESS_LOG": "off"}).start()
    try:
        _traffic(buzz)
        assert wait_until(lambda: len(buzz.ledger()) >= 1)  # the requests were served and settled
    finally:
        buzz.stop()
    output = buzz.output()
    assert b"access log off" in output  # start-up says so
    assert b"/healthz" not in output and b"request_id=" not in output and b'"request_id"' not in output
    assert CANARY.encode() not in output


def test_a_log_that_cannot_keep_up_drops_and_counts_instead_of_waiting() -> None:
    read_end, write_end = os.pipe()
    reader: threading.Thread | None = None
    try:
        # Fill the pipe, so the writer's next write blocks until someone reads.
        fcntl.fcntl(write_end, fcntl.F_SETFL, os.O_NONBLOCK)
        with pytest.raises(BlockingIOError):
            while True:
                os.write(write_end, b"x" * 65536)
        fcntl.fcntl(write_end, fcntl.F_SETFL, 0)
        counters = Counters()
        log = AccessLog("text", counters, fd=write_end, capacity=10, interval=0.001)
        scope = {"method": "GET", "path": "/healthz", "headers": []}

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        async def send(message: Any) -> None:
            return None

        async def scenario() -> None:
            log.start()
            await log.observe(app, scope, send, send)
            assert wait_until(lambda: log.pending == 0)  # the writer took it, and is stuck writing it
            for _ in range(15):  # each returns at once: nothing on the request path waits for the pipe
                await log.observe(app, scope, send, send)
            assert log.pending == 10
            assert counters.get("access_log_dropped") == 5

        asyncio.run(scenario())
        # Once the pipe is read again, what was kept is written.
        reader = threading.Thread(target=_read_all, args=(read_end,), daemon=True)
        reader.start()
        log.close()
        assert log.written == 11
    finally:
        os.close(write_end)
        if reader is None:
            os.close(read_end)


def _read_all(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    finally:
        os.close(fd)


def test_route_templates_keep_no_ids_names_or_models() -> None:
    from buzz.access_log import route_template

    cases = {
        ("POST", "/v1/messages"): "/v1/messages",
        ("POST", "/v1beta/models/gemini-2.5-pro:countTokens"): "/v1beta/models/{model}:countTokens",
        ("POST", "/v1/models/gemini-2.5-pro:batchEmbedContents"): "/v1/models/{model}:batchEmbedContents",
        ("POST", "/v1/models/gemini-2.5-pro:streamGenerateContent"): "/v1/models/{model}:streamGenerateContent",
        ("GET", "/v1/models/claude-opus-4-8"): "/v1/models/{id}",
        ("GET", "/v1beta/models/gemini-2.5-pro"): "/v1beta/models/{id}",
        ("POST", "/admin/api/keys/abc123def456/revoke"): "/admin/api/keys/{id}/revoke",
        ("GET", "/console/keys/abc123def456/revoke"): "/console/keys/{id}/revoke",
        ("POST", "/console/projects/acme/balance"): "/console/projects/{id}/balance",
        ("GET", "/console/static/vendor/uplot/uPlot.iife.min.js"): "/console/static/{file}",
        ("POST", "/console/sign-in"): "/console/sign-in",
        ("GET", "/nowhere"): None,
    }
    assert {request: route_template(*request) for request in cases} == cases
