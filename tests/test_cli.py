"""The `buzz` command as an operator uses it: keys, usage, config errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from fakes.fake_anthropic import FakeAnthropic, Reply, message_json
from support import BuzzProcess, raw_post


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
    with BuzzProcess(tmp_path / "data", fake_session.url) as process:
        key = process.create_key(project="acme")
        for model, tokens, tag in (
            ("claude-opus-4-8", 1000, "team=ml"),
            ("claude-haiku-4-5", 2000, "team=web"),
        ):
            fake_session.enqueue(Reply(body=message_json(model, "x", {"input_tokens": tokens, "output_tokens": 100})))
            body = f'{{"model":"{model}","max_tokens":5,"metadata":{{"user_id":"u1"}},"messages":[]}}'.encode()
            assert raw_post(process.url, "/v1/messages", body, {"x-api-key": key, "x-buzz-tags": tag})[0] == 200
        process.ledger(count=2)
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


def _buzz(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`buzz` as a person runs it: from a directory of their own, with no BUZZ_* in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZZ_")}
    return subprocess.run(
        [sys.executable, "-m", "buzz", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_every_command_takes_data_dir_and_says_which_database(tmp_path: Path) -> None:
    data = tmp_path / "gateway-data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    created = _buzz(elsewhere, "keys", "create", "--project", "acme", "--data-dir", str(data))
    assert created.returncode == 0, created.stderr
    database = str((data / "buzz.sqlite3").resolve())
    assert database in created.stderr  # where the key went, as an absolute path
    key_id = created.stdout.split("-")[1]
    # Every command takes --data-dir, after the command or before it.
    assert key_id in _buzz(elsewhere, "keys", "list", "--data-dir", str(data)).stdout
    assert key_id in _buzz(elsewhere, "--data-dir", str(data), "keys", "list").stdout
    for args in (
        ["projects", "list"],
        ["usage", "--since", "1d"],
        ["balance", "add", "acme", "0"],
        ["keys", "update", key_id, "--rpm", "5"],
        ["projects", "update", "acme", "--rpm", "9"],
        ["keys", "revoke", key_id],
    ):
        result = _buzz(elsewhere, *args, "--data-dir", str(data))
        assert result.returncode == 0, (args, result.stderr)
    # Without it, a command that only reads says where it looked, and creates nothing there.
    lost = _buzz(elsewhere, "keys", "list")
    assert lost.returncode != 0
    assert str((elsewhere / "buzz-data" / "buzz.sqlite3").resolve()) in lost.stderr and "--data-dir" in lost.stderr
    assert not (elsewhere / "buzz-data").exists()


def test_usage_shows_unpriced_cost_as_unknown_and_ends_with_totals(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake_session.url) as process:
        key = process.create_key(project="acme")
        for model in ("claude-haiku-4-5", "claude-nofamily"):  # the second has no price anywhere
            fake_session.enqueue(Reply(body=message_json(model, "x", {"input_tokens": 1000, "output_tokens": 100})))
            body = f'{{"model":"{model}","max_tokens":5,"messages":[]}}'.encode()
            assert raw_post(process.url, "/v1/messages", body, {"x-api-key": key})[0] == 200
        process.ledger(count=2)
    table = process.cli("usage", "--by", "model").stdout
    unpriced = next(line for line in table.splitlines() if "claude-nofamily" in line)
    assert "1 unpriced" in unpriced and "—" in unpriced and "$0.000000" not in unpriced
    haiku = next(line for line in table.splitlines() if "claude-haiku-4-5" in line)
    assert "$0.001500" in haiku  # 1000 x $1/M + 100 x $5/M
    total = next(line for line in table.splitlines() if "total" in line)
    # Both requests and all their tokens; the cost is a lower bound, as one request has no price.
    assert "2" in total and "2,000" in total and "≥ $0.001500" in total
