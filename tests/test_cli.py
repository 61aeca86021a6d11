"""The `buzz` command as an operator uses it: keys, usage, config errors."""

from __future__ import annotations

import re
from pathlib import Path

from fakes.fake_anthropic import FakeAnthropic, Reply, message_json
from support import BuzzProcess
from test_fidelity import raw_post


def test_keys_create_prints_only_the_key_on_stdout(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    process = BuzzProcess(tmp_path / "data", fake_session.url)
    result = process.cli("keys", "create", "--project", "acme", "--name", "ci bot")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"buzz-[a-z0-9]{12}-[A-Za-z0-9]{32}\n", result.stdout)
    key_id = result.stdout.split("-")[1]
    assert key_id in result.stderr and "shown once" in result.stderr
    # Only a hash is stored: the secret appears nowhere in the data directory.
    secret = result.stdout.strip().split("-")[2].encode()
    for path in (tmp_path / "data").rglob("*"):
        assert secret not in path.read_bytes()
    listing = process.cli("keys", "list")
    assert key_id in listing.stdout and "acme" in listing.stdout and "active" in listing.stdout
    assert secret.decode() not in listing.stdout
    revoked = process.cli("keys", "revoke", key_id)
    assert revoked.returncode == 0
    assert "revoked" in process.cli("keys", "list").stdout
    again = process.cli("keys", "revoke", key_id)
    assert again.returncode != 0 and "no active key" in again.stderr


def test_usage_table_by_model_key_user_tag_and_day(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    process = BuzzProcess(tmp_path / "data", fake_session.url).start()
    try:
        key = process.create_key(project="acme")
        for model, tokens, tag in (
            ("claude-opus-4-8", 1000, "team=ml"),
            ("claude-haiku-4-5", 2000, "team=web"),
        ):
            fake_session.enqueue(Reply(body=message_json(model, "x", {"input_tokens": tokens, "output_tokens": 100})))
            body = f'{{"model":"{model}","max_tokens":5,"metadata":{{"user_id":"u1"}},"messages":[]}}'.encode()
            assert raw_post(process.url, "/v1/messages", body, {"x-api-key": key, "x-buzz-tags": tag})[0] == 200
        process.ledger(count=2)
    finally:
        process.stop()
    by_model = process.cli("usage", "--by", "model")
    assert by_model.returncode == 0, by_model.stderr
    # Opus 4.8: 1000 x $5/M + 100 x $25/M = $0.0075; Haiku 4.5: 2000 x $1/M + 100 x $5/M = $0.0025.
    opus = next(line for line in by_model.stdout.splitlines() if "claude-opus-4-8" in line)
    assert "$0.007500" in opus and "1,000" in opus
    haiku = next(line for line in by_model.stdout.splitlines() if "claude-haiku-4-5" in line)
    assert "$0.002500" in haiku and "2,000" in haiku
    assert "$0.010000" in process.cli("usage", "--by", "key").stdout
    assert "u1" in process.cli("usage", "--by", "user").stdout
    tags = process.cli("usage", "--by", "tag").stdout
    assert "team=ml" in tags and "team=web" in tags
    assert re.search(r"\d{4}-\d{2}-\d{2}", process.cli("usage", "--by", "day", "--since", "1d").stdout)
    bad = process.cli("usage", "--since", "yesterday-ish")
    assert bad.returncode != 0 and "duration" in bad.stderr


def test_unknown_config_key_is_fatal(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    config = tmp_path / "buzz.toml"
    config.write_text("[server]\nprot = 8080\n")
    process = BuzzProcess(tmp_path / "data", fake_session.url)
    result = process.cli("--config", str(config), "keys", "list")
    assert result.returncode != 0
    assert "unknown key server.prot" in result.stderr
