"""The export as each store renders it (SQLite in its SQL, PostgreSQL from its rows), byte for
byte what `buzz.export.encode` makes of the same rows in Python: every field, text that needs
quoting, times in zones with half-hour offsets and across summer time, and a resumed export."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from buzz import export
from buzz.billing.ledger import LedgerRow
from buzz.store.base import Store
from stores import BACKENDS, Postgres, open_backend

START = int(datetime(2026, 3, 28, tzinfo=UTC).timestamp())  # Europe changes to summer time on the 29th


def _rows(count: int) -> list[LedgerRow]:
    rng = random.Random(11)
    users = [None, "alice", 'Zoë "the boss"', "a,b", "line\nbreak", "tab\there"]
    tags = [(), ("feature=search",), ('say="hi"',), ("path=C:\\x",), ('team="ml"', "plain"), ("x=1", "y=2", "z")]
    rows = []
    for i in range(count):
        cost = rng.choice([None, 0, 1, 1_500, 500_000_000, 12_345_678_901, 10**9])
        rows.append(
            LedgerRow(
                id=f"req_{i:05d}",
                ts=START + i * 211.337 + rng.random(),
                surface=rng.choice(["anthropic", "openai", "gemini"]),
                status=rng.choice([200, 400, 429, 500, 529]),
                usage_source=rng.choice(["reported", "estimated", "none"]),
                latency_ms=round(rng.random() * 3000, 3),
                key_id=rng.choice([None, "k1abc"]),
                project=rng.choice([None, "acme", "big, co"]),
                user_id=rng.choice(users),
                tags=tuple(t for t in rng.choice(tags) if "," not in t),
                provider=rng.choice([None, "anthropic"]),
                model=rng.choice([None, "claude-haiku-4-5", "gpt-4o"]),
                error_type=rng.choice([None, "overloaded_error"]),
                input_tokens=rng.randint(0, 10**6),
                output_tokens=rng.randint(0, 10**5),
                cache_write_5m_tokens=rng.randint(0, 100),
                cache_write_1h_tokens=rng.randint(0, 100),
                cache_read_tokens=rng.randint(0, 1000),
                cost_nanos=cost,
                list_cost_nanos=None if cost is None else cost * 2,
                price_version=rng.choice([None, "genai-prices 0.0.40; discount 0.20; overrides 1a2b3c4d"]),
                ttfb_ms=rng.choice([None, round(rng.random() * 100, 3)]),
                upstream_request_id=rng.choice([None, "req_011CTest"]),
                usage_note=rng.choice([None, "body_over_cap"]),
            )
        )
    return rows


@pytest.fixture(scope="module", params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres: Postgres
) -> Iterator[Store]:
    store = open_backend(request.param, tmp_path_factory.mktemp("export"), postgres)
    store.write_ledger(_rows(2000))  # about five days, across the change to summer time
    yield store
    store.close()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata", "Europe/Berlin", "America/St_Johns"])
@pytest.mark.parametrize("project", [None, "big, co"])
def test_the_store_renders_the_export_as_python_does(store: Store, fmt: str, tz: str, project: str | None) -> None:
    query = export.ExportQuery(
        START, START + 6 * 86400, project, None, "csv" if fmt == "csv" else "jsonl", ZoneInfo(tz)
    )
    rendered = b"".join(export.lines(store, query))
    reference = b"".join(export.encode(store.export_rows(query.since, query.until, project, None), query))
    assert rendered == reference
    assert rendered.count(b"\n") > 300


def test_the_export_parses_back_to_the_rows(store: Store) -> None:
    query = export.ExportQuery(START, START + 6 * 86400, None, None, "csv", ZoneInfo("Europe/Berlin"))
    lines = list(csv.DictReader(io.StringIO(b"".join(export.lines(store, query)).decode(), newline="")))

    def millis(row: LedgerRow) -> int:  # as stored: to the microsecond, then cut to the millisecond
        return round(row.ts * 1_000_000) // 1000

    rows = sorted(_rows(2000), key=lambda r: (millis(r), r.id))
    assert [line["id"] for line in lines] == [r.id for r in rows]
    for line, row in zip(lines, rows, strict=True):
        assert round(datetime.fromisoformat(line["ts"]).timestamp() * 1000) == millis(row)
        assert line["user_id"] == (row.user_id or "") and line["tags"] == ",".join(row.tags)
        assert line["cost_nanos"] == ("" if row.cost_nanos is None else str(row.cost_nanos))
    offsets = {line["ts"][-6:] for line in lines}
    assert offsets == {"+01:00", "+02:00"}  # both sides of the change
    jsonl = export.ExportQuery(START, START + 86400, None, None, "jsonl", ZoneInfo("UTC"))
    first = json.loads(b"".join(export.lines(store, jsonl)).splitlines()[0])
    assert first["cost_usd"] in (None, "0.00", "0.000000001", "0.0000015", "0.50", "12.345678901", "1.00")


def test_zone_offsets_find_each_change_to_the_quarter_hour() -> None:
    berlin = export.zone_offsets(ZoneInfo("Europe/Berlin"), START, START + 3 * 86400)
    change = int(datetime(2026, 3, 29, 1, tzinfo=UTC).timestamp())
    assert berlin == [(START, 3600, "+01:00"), (change, 7200, "+02:00")]
    lord_howe = export.zone_offsets(ZoneInfo("Australia/Lord_Howe"), START + 7 * 86400, START + 9 * 86400)
    assert [(o, label) for _, o, label in lord_howe] == [(39600, "+11:00"), (37800, "+10:30")]
    assert lord_howe[1][0] % 1800 == 0
