"""Zero retention, in the console: a canary sent through the gateway appears in no console page,
and nothing the console is sent (a token typed wrong, a form's values) reaches a file or the log."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path

from console_support import ADMIN_TOKEN, Client, make_key

from fakes.fake_anthropic import FakeAnthropic, Reply, error_reply, message_json, text_stream_events
from support import BuzzProcess, raw_post, wait_until

CANARY = "CANARY-c0ns0le-do-not-keep"
LINK = re.compile(r'href="(/console/[^"]*)"')


def _body(stream: bool = False) -> bytes:
    message = {"role": "user", "content": f"{CANARY} prompt"}
    document = {"model": "claude-sonnet-4-6", "max_tokens": 32, "stream": stream, "messages": [message]}
    return json.dumps({**document, "system": f"{CANARY} system"}).encode()


def _every_page(client: Client, start: str) -> dict[str, str]:
    """Every console page reachable by links from `start`, fetched once each (links that would
    change something are POST forms, never followed here)."""
    seen: dict[str, str] = {}
    queue = [start]
    while queue:
        path = queue.pop()
        if path in seen or path.startswith("/console/static/"):
            continue
        reply = client.get(path)
        seen[path] = reply.body
        queue.extend(link.replace("&amp;", "&") for link in LINK.findall(reply.body))
    return seen


def _read(url: str, bearer: str) -> bytes:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {bearer}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
        return body


def test_the_console_shows_and_keeps_no_body(tmp_path: Path, fake: FakeAnthropic) -> None:
    env = {"BUZZ_ADMIN_TOKEN": ADMIN_TOKEN, "BUZZ_LOG_LEVEL": "debug"}
    process = BuzzProcess(tmp_path / "data", fake.url, env=env).start()
    try:
        _, key = make_key(process.data_dir, "acme", "canary key")
        usage = {"input_tokens": 50, "output_tokens": 3}
        fake.enqueue(Reply(body=message_json("claude-sonnet-4-6", f"{CANARY} answer", usage)))
        assert raw_post(process.url, "/v1/messages", _body(), {"x-api-key": key})[0] == 200
        events = text_stream_events("claude-sonnet-4-6", [CANARY, " streamed"], usage, {"output_tokens": 9})
        fake.enqueue(Reply(chunks=events))
        assert raw_post(process.url, "/v1/messages", _body(stream=True), {"x-api-key": key})[0] == 200
        fake.enqueue(error_reply(400, "invalid_request_error", f"bad: {CANARY}"))
        assert raw_post(process.url, "/v1/messages", _body(), {"x-api-key": key})[0] == 400
        assert wait_until(lambda: len(process.ledger()) >= 3, timeout=10)

        operator = Client(process.url)
        # A sign-in with the canary for a token, and forms with it for values: refused, and forgotten.
        assert operator.sign_in(CANARY).status == 401
        assert operator.sign_in(f"buzzc-{CANARY}").status == 401
        assert operator.sign_in(ADMIN_TOKEN).status == 303
        assert operator.submit("/console/keys", {"project": "acme", "rpm": CANARY}).status == 400
        assert operator.submit("/console/projects", {"name": CANARY + " x"}).status == 400
        assert operator.submit("/console/projects/acme/balance", {"usd": CANARY}).status == 400
        made = operator.submit("/console/tokens", {"project": "acme", "name": "members"})
        token = re.search(r"buzzc-[a-z0-9]{12}-[A-Za-z0-9]{32}", made.body)
        assert token is not None
        member = Client(process.url)
        assert member.sign_in(token[0]).status == 303

        pages = {**_every_page(operator, "/console/keys"), **_every_page(member, "/console/keys")}
        assert {"/console/keys", "/console/projects", "/console/projects/acme", "/console/tokens"} <= set(pages)
        assert len([path for path in pages if path.startswith("/console/keys/")]) >= 2  # a key's page, its revoke
        for path, body in pages.items():
            assert CANARY not in body, path
        # The export and the usage API hold metadata only, for the operator and for the member.
        for bearer in (ADMIN_TOKEN, token[0]):
            for path in ("/admin/api/usage/export?since=1d", "/admin/api/usage/export?since=1d&format=jsonl"):
                exported = _read(process.url + path, bearer)
                assert exported.count(b"\n") == (3 if "jsonl" in path else 4)  # the three rows, and a header
                assert CANARY.encode() not in exported, path
            assert CANARY.encode() not in _read(process.url + "/admin/api/usage?range=24h&by=user", bearer)
    finally:
        exit_code = process.stop(signal.SIGTERM)
    assert exit_code in (0, -signal.SIGTERM)
    assert all(CANARY.encode() in request.body for request in fake.requests)  # it did cross buzz
    written = [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
    assert any(path.name.startswith("buzz.sqlite3") for path in written)
    for path in written:
        content = path.read_bytes()
        assert CANARY.encode() not in content, f"canary found in {path}"
        # Nor a credential the console was given or made: only hashes and fingerprints of them.
        assert ADMIN_TOKEN.encode() not in content and token[0].encode() not in content, path
    assert CANARY.encode() not in process.output()
    assert ADMIN_TOKEN.encode() not in process.output()
    assert token[0].encode() not in process.output()
    assert b"Traceback" not in process.output()
