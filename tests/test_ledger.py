"""One row per request with exactly the ledger's fields; batched; nothing lost on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import signal
import sqlite3
from pathlib import Path

from buzz.store.timetext import RowTimes, iso
from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, raw_post

# Billing metadata, and nothing else.
LEDGER_COLUMNS = [
    "id",
    "ts",
    "key_id",
    "project",
    "user_id",
    "tags",
    "surface",
    "provider",
    "model",
    "status",
    "error_type",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "cost_nanos",
    "list_cost_nanos",
    "price_version",
    "usage_source",
    "latency_ms",
    "ttfb_ms",
    "upstream_request_id",
    "usage_note",
    "credential",
]

ROLLUPS = {
    "rollup_project": [],
    "rollup": ["key_id", "provider", "model", "surface", "status_class"],
    "rollup_user": ["user_id"],
    "rollup_tag": ["tag_key", "tag_value"],
    "rollup_tag_key": ["tag_key"],
}
ROLLUP_SUMS = [
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "cost_nanos",
    "list_cost_nanos",
    "unpriced",
    "estimated",
]


def test_every_table_holds_only_metadata(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake_session.url):
        pass  # started once: the migrations ran
    conn = sqlite3.connect(tmp_path / "data" / "buzz.sqlite3")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {
        "keys",
        "projects",
        "counters",
        "ledger",
        "schema_migrations",
        "console_tokens",
        "console_secret",
        *ROLLUPS,
        "rollup_state",
        "key_last_used",
        "batches",
        "batch_results",
        "batch_files",
    }
    assert [row[1] for row in conn.execute("PRAGMA table_info(ledger)")] == LEDGER_COLUMNS
    # A batch's owner and which of its results were billed: ids and attribution, never content.
    batches = [row[1] for row in conn.execute("PRAGMA table_info(batches)")]
    assert batches == ["id", "provider", "key_id", "project", "user_id", "tags", "created"]
    assert [row[1] for row in conn.execute("PRAGMA table_info(batch_results)")] == ["batch_id", "custom_id"]
    assert [row[1] for row in conn.execute("PRAGMA table_info(batch_files)")] == ["file_id", "batch_id"]
    # The rollups hold the ledger's own dimensions and sums of its counts, nothing else.
    for table, extra in ROLLUPS.items():
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        assert columns == ["project", "span", "bucket", *extra, *ROLLUP_SUMS]
    assert [row[1] for row in conn.execute("PRAGMA table_info(key_last_used)")] == ["key_id", "project", "ts"]
    conn.close()


def test_row_fields_for_a_billed_request(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    body = b'{"model":"claude-haiku-4-5-20251001","max_tokens":9,"metadata":{"user_id":"user-7"},"messages":[]}'
    status, headers, _ = raw_post(
        buzz.url,
        "/v1/messages",
        body,
        {"x-api-key": key, "x-buzz-tags": "feature=search, team=ml,feature=search"},
    )
    assert status == 200
    request_id = dict((k.lower(), v) for k, v in headers)["x-buzz-request-id"]
    [row] = buzz.ledger(count=1, where=lambda r: r["id"] == request_id)
    assert row["key_id"] == key.split("-")[1]
    assert row["project"] == "acme"
    assert row["user_id"] == "user-7"
    assert row["tags"] == '["feature=search","team=ml"]'
    assert (row["surface"], row["provider"], row["model"]) == (
        "anthropic",
        "anthropic",
        "claude-haiku-4-5-20251001",
    )
    assert (row["status"], row["error_type"], row["usage_source"]) == (200, None, "reported")
    input_tokens = len(body) // 4  # what the fake upstream reports
    assert (row["input_tokens"], row["output_tokens"]) == (input_tokens, 5)
    # Haiku 4.5 lists at $1 / $5 per million tokens: 1,000 and 5,000 nano-dollars a token.
    assert row["list_cost_nanos"] == input_tokens * 1000 + 5 * 5000
    assert row["cost_nanos"] == row["list_cost_nanos"]  # no discount configured
    assert row["price_version"].startswith("genai-prices")
    assert row["latency_ms"] > 0 and 0 < row["ttfb_ms"] <= row["latency_ms"]
    assert row["upstream_request_id"].startswith("req_")
    assert row["ts"].endswith("Z")


def test_x_buzz_user_header_names_the_user(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    body = b'{"model":"claude-haiku-4-5","max_tokens":9,"metadata":{"user_id":"from-body"},"messages":[]}'
    _, headers, _ = raw_post(buzz.url, "/v1/messages", body, {"x-api-key": key, "x-buzz-user": "alice@example.com"})
    request_id = dict((k.lower(), v) for k, v in headers)["x-buzz-request-id"]
    [row] = buzz.ledger(count=1, where=lambda r: r["id"] == request_id)
    assert row["user_id"] == "alice@example.com"


def test_sigterm_loses_no_row(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    # A long flush interval: the rows are still in memory when the signal arrives.
    process = BuzzProcess(tmp_path / "data", fake_session.url, env={"BUZZ_LEDGER_FLUSH_INTERVAL": "5"}).start()
    key = process.create_key()
    body = b'{"model":"claude-sonnet-4-6","max_tokens":9,"messages":[]}'
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda _: raw_post(process.url, "/v1/messages", body, {"x-api-key": key})[0], range(60))
        )
    assert statuses == [200] * 60
    assert process.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    rows = process.ledger()
    assert len(rows) == 60
    assert len({row["id"] for row in rows}) == 60
    assert b"ledger flushed: 60 rows written" in process.output()


def test_row_timestamps_are_the_same_text_as_iso() -> None:
    # The writer formats each second once; every millisecond, and the microsecond rounding at the
    # edges of a second and of a millisecond, must come out as `iso` has it.
    stamp = RowTimes()
    second = 1_764_633_599  # 2025-12-01T23:59:59Z: the next second is another day
    moments = [second + m / 1000 for m in range(1000)]
    moments += [second + 0.9999995, second + 0.9999994, second + 0.0004995, second + 0.5749993, second + 1.0]
    moments += [3_228_779_777.5749993, 566_119_604.5909995]
    assert [stamp(ts) for ts in moments] == [iso(ts) for ts in moments]
    assert stamp(second + 0.9999996) == "2025-12-02T00:00:00.000Z"
