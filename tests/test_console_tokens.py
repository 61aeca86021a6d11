"""Project console tokens: made by the CLI and the admin API, shown once, stored hashed, listed,
revocable, and never interchangeable with API keys."""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

from buzz import console_tokens
from buzz.store.sqlite import SQLiteStore
from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, raw_post

TOKEN = "operator-token-for-tests"
BODY = b'{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}'


def _call(url: str, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method, headers={"authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_cli_makes_lists_and_revokes_console_tokens(tmp_path: Path, fake: FakeAnthropic) -> None:
    process = BuzzProcess(tmp_path / "data", fake.url)
    assert process.cli("projects", "create", "acme").returncode == 0
    made = process.cli("projects", "token", "create", "acme", "--name", "finance team")
    assert made.returncode == 0, made.stderr
    assert re.fullmatch(r"buzzc-[a-z0-9]{12}-[A-Za-z0-9]{32}\n", made.stdout)  # the token alone on stdout
    token_id, secret = made.stdout.strip().split("-")[1:]
    assert token_id in made.stderr and "shown once" in made.stderr
    for path in (tmp_path / "data").rglob("*"):
        assert secret.encode() not in path.read_bytes()  # only its hash is kept
    listed = process.cli("projects", "token", "list", "acme").stdout
    assert token_id in listed and "finance team" in listed and "active" in listed and secret not in listed
    store = SQLiteStore(tmp_path / "data" / "buzz.sqlite3")
    try:
        record = console_tokens.verify(store, made.stdout.strip())
        assert record is not None and (record.project, record.name) == ("acme", "finance team")
        token = made.stdout.strip()
        wrong = token[:-1] + ("y" if token.endswith("x") else "x")  # the last character changed
        assert console_tokens.verify(store, wrong) is None
        assert process.cli("projects", "token", "revoke", token_id).returncode == 0
        assert console_tokens.verify(store, made.stdout.strip()) is None  # revoked
    finally:
        store.close()
    assert "revoked" in process.cli("projects", "token", "list").stdout
    again = process.cli("projects", "token", "revoke", token_id)
    assert again.returncode != 0 and "no active console token" in again.stderr
    missing = process.cli("projects", "token", "create", "nobody")
    assert missing.returncode != 0 and "no project 'nobody'" in missing.stderr


def test_the_admin_api_makes_lists_and_revokes_them(tmp_path: Path, fake: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake.url, env={"BUZZ_ADMIN_TOKEN": TOKEN}) as process:
        url = process.url
        assert _call(url, "POST", "/admin/api/projects", {"name": "acme"})[0] == 201
        status, made = _call(url, "POST", "/admin/api/projects/acme/tokens", {"name": "ci"})
        assert status == 201 and str(made["token"]).startswith(f"buzzc-{made['id']}-")
        status, listed = _call(url, "GET", "/admin/api/projects/acme/tokens")
        assert status == 200 and [t["id"] for t in listed["data"]] == [made["id"]]  # type: ignore[index]
        assert str(made["token"]).split("-")[2] not in json.dumps(listed)
        assert _call(url, "POST", "/admin/api/projects/acme/tokens", {"label": "x"})[0] == 400  # unknown field
        assert _call(url, "POST", "/admin/api/projects/nope/tokens", {})[0] == 404
        # A console token is not an API key, and an API key is not a console token.
        assert raw_post(url, "/v1/messages", BODY, {"x-api-key": str(made["token"])})[0] == 401
        key = process.create_key(project="acme")
        store = SQLiteStore(tmp_path / "data" / "buzz.sqlite3")
        try:
            assert console_tokens.verify(store, key) is None
        finally:
            store.close()
        assert _call(url, "POST", f"/admin/api/tokens/{made['id']}/revoke")[0] == 200
        assert _call(url, "POST", f"/admin/api/tokens/{made['id']}/revoke")[0] == 404
    conn = sqlite3.connect(tmp_path / "data" / "buzz.sqlite3")
    assert conn.execute("SELECT count(*) FROM console_tokens WHERE revoked_at IS NOT NULL").fetchone() == (1,)
    conn.close()
