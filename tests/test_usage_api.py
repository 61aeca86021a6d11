"""`/admin/api/usage` and `/admin/api/usage/export` on a real `buzz serve`, with real requests in
its ledger: the aggregates equal sums over the rows, the CSV parses and matches the ledger row for
row, a project's console token reads its project only, and a cut export resumes at its cursor."""

from __future__ import annotations

import csv
import http.client
import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, raw_post

ADMIN = "operator-token-for-usage-tests"
MODEL = "claude-haiku-4-5-20251001"


def _get(buzz: BuzzProcess, path: str, token: str | None, **params: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", buzz.port, timeout=30)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    conn.request("GET", f"{path}?{urlencode(params)}" if params else path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, fake_session: FakeAnthropic) -> Iterator[dict[str, Any]]:
    data_dir: Path = tmp_path_factory.mktemp("usage") / "data"
    with BuzzProcess(data_dir, fake_session.url, {"BUZZ_ADMIN_TOKEN": ADMIN}) as buzz:
        keys = {"acme": buzz.create_key("acme"), "globex": buzz.create_key("globex")}
        token = buzz.cli("projects", "token", "create", "acme").stdout.strip()
        sent = 0
        for i in range(24):
            project = "acme" if i % 3 else "globex"
            headers = {
                "x-api-key": keys[project],
                "anthropic-version": "2023-06-01",
                "content-type": "application/json",
                "x-buzz-tags": f"feature={'search' if i % 2 else 'chat'},team=ml",
            }
            if i % 4:
                headers["x-buzz-user"] = f"user-{i % 4}"
            body = json.dumps({"model": MODEL, "max_tokens": 16, "messages": []}).encode()
            assert raw_post(buzz.url, "/v1/messages", body, headers)[0] == 200
            sent += 1
        # And one that buzz refuses: malformed JSON, a 400 of acme's.
        bad = {"x-api-key": keys["acme"], "content-type": "application/json"}
        assert raw_post(buzz.url, "/v1/messages", b'{"model": ', bad)[0] == 400
        rows = buzz.ledger(sent + 1)
        assert len(rows) == sent + 1
        yield {"buzz": buzz, "rows": rows, "member": token, "keys": keys}


def _sum(rows: list[dict[str, Any]], field: str) -> int:
    return sum(row[field] or 0 for row in rows)


def test_the_aggregates_are_the_ledgers_sums(setup: dict[str, Any]) -> None:
    buzz, rows = setup["buzz"], setup["rows"]
    status, headers, body = _get(buzz, "/admin/api/usage", ADMIN, range="24h", by="project")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    report = json.loads(body)
    assert report["tz"] == "UTC" and report["bucket"] == "hour" and len(report["buckets"]) == 24
    assert all(stamp.endswith("+00:00") for stamp in report["buckets"])
    groups = {g["group"]: g for g in report["groups"]}
    assert set(groups) == {"acme", "globex"}
    for project in ("acme", "globex"):
        mine = [r for r in rows if r["project"] == project]
        totals = groups[project]["totals"]
        assert totals["requests"] == len(mine)
        assert totals["input_tokens"] == _sum(mine, "input_tokens") > 0
        assert totals["output_tokens"] == _sum(mine, "output_tokens") > 0
        assert sum(groups[project]["series"]["requests"]) == len(mine)
        assert sum(groups[project]["series"]["cost_nanos"]) == _sum(mine, "cost_nanos")
    assert groups["acme"]["totals"]["errors"] == 1
    assert groups["globex"]["totals"]["errors"] == 0
    assert report["total"]["requests"] == len(rows)


def test_a_split_by_tag_key_and_a_filter(setup: dict[str, Any]) -> None:
    buzz, rows = setup["buzz"], setup["rows"]
    for filters, mine in (
        ({"project": "acme"}, [r for r in rows if r["project"] == "acme"]),  # from the tag rollup
        ({"user": "user-2"}, [r for r in rows if r["user_id"] == "user-2"]),  # a user and a tag: raw rows
    ):
        status, _, body = _get(buzz, "/admin/api/usage", ADMIN, range="7d", by="tag:feature", **filters)
        assert status == 200, body
        report = json.loads(body)
        groups = {g["group"]: g["totals"]["requests"] for g in report["groups"]}
        expected = {value: sum(1 for r in mine if f"feature={value}" in r["tags"]) for value in ("search", "chat")}
        assert groups == {value: count for value, count in expected.items() if count}
        assert sum(groups.values()) > 0
        assert report["filters"] == filters
        assert report["total"]["requests"] == len(mine)


def test_a_project_token_reads_its_project_only(setup: dict[str, Any]) -> None:
    buzz, rows, member = setup["buzz"], setup["rows"], setup["member"]
    status, _, body = _get(buzz, "/admin/api/usage", member, range="24h", by="project", project="globex")
    assert status == 200
    report = json.loads(body)
    assert [g["group"] for g in report["groups"]] == ["acme"]
    assert report["total"]["requests"] == sum(1 for r in rows if r["project"] == "acme")
    # An API key is not a console token, and reads nothing.
    assert _get(buzz, "/admin/api/usage", setup["keys"]["acme"], range="24h")[0] == 401
    assert _get(buzz, "/admin/api/usage", None, range="24h")[0] == 401
    # Nor does it open the rest of the admin API.
    assert _get(buzz, "/admin/api/keys", member)[0] == 401


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"range": "3d"}, "range"),
        ({"range": "24h", "by": "colour"}, "by"),
        ({"range": "24h", "tz": "Mars/Olympus"}, "tz"),
        ({"range": "24h", "status": "3xx"}, "status"),
        ({"since": "yesterday"}, "since"),
    ],
)
def test_a_bad_parameter_is_a_400_that_names_it(setup: dict[str, Any], params: dict[str, str], names: str) -> None:
    status, _, body = _get(setup["buzz"], "/admin/api/usage", ADMIN, **params)
    assert status == 400
    error = json.loads(body)["error"]
    assert error["type"] == "gateway_invalid_request_error"
    assert error["message"].startswith(f"{names}:")


def _csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


def _as_text(value: object) -> str:
    return "" if value is None else str(value)


def test_the_csv_export_matches_the_ledger_row_for_row(setup: dict[str, Any]) -> None:
    buzz, rows = setup["buzz"], setup["rows"]
    status, headers, body = _get(buzz, "/admin/api/usage/export", ADMIN, since="1d", format="csv")
    assert status == 200
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert headers["content-disposition"].startswith('attachment; filename="buzz-usage-')
    exported = _csv(body)
    assert [r["id"] for r in exported] == [r["id"] for r in rows]  # oldest first, every row
    for row, line in zip(rows, exported, strict=True):
        assert line["ts"] == row["ts"][:-1] + "+00:00"  # the same instant, with its offset
        for name in ("project", "key_id", "user_id", "surface", "provider", "model", "error_type"):
            assert line[name] == _as_text(row[name]), name
        for name in ("status", "input_tokens", "output_tokens", "cache_read_tokens", "cost_nanos", "list_cost_nanos"):
            assert line[name] == _as_text(row[name]), name
        assert line["tags"] == ",".join(json.loads(row["tags"]))
        assert line["latency_ms"] == _as_text(row["latency_ms"])


def test_a_project_export_in_a_time_zone(setup: dict[str, Any]) -> None:
    buzz, rows, member = setup["buzz"], setup["rows"], setup["member"]
    params = {"since": "1d", "format": "jsonl", "tz": "Asia/Kolkata", "project": "globex"}
    status, headers, body = _get(buzz, "/admin/api/usage/export", member, **params)
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in body.splitlines()]
    mine = [r for r in rows if r["project"] == "acme"]
    assert [line["id"] for line in lines] == [r["id"] for r in mine]
    for line, row in zip(lines, mine, strict=True):
        assert line["ts"].endswith("+05:30")
        assert datetime.fromisoformat(line["ts"]) == datetime.fromisoformat(row["ts"])
        assert line["tags"] == json.loads(row["tags"])


def test_a_cut_export_resumes_at_its_cursor(setup: dict[str, Any]) -> None:
    buzz, rows = setup["buzz"], setup["rows"]
    whole = _csv(_get(buzz, "/admin/api/usage/export", ADMIN, since="1d")[2])
    kept = whole[:10]  # what a client holds when its download is cut
    status, _, rest = _get(buzz, "/admin/api/usage/export", ADMIN, since="1d", cursor=kept[-1]["cursor"])
    assert status == 200
    assert [r["id"] for r in kept + _csv(rest)] == [r["id"] for r in rows]
    assert _get(buzz, "/admin/api/usage/export", ADMIN, since="1d", cursor="nonsense")[0] == 400


def test_a_client_that_hangs_up_mid_export_leaves_the_gateway_serving(setup: dict[str, Any]) -> None:
    buzz = setup["buzz"]
    with socket.create_connection(("127.0.0.1", buzz.port), timeout=10) as sock:
        head = f"GET /admin/api/usage/export?since=1d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
        sock.sendall(head.encode())
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
    assert _get(buzz, "/admin/api/usage/export", ADMIN, since="1d")[0] == 200
    assert b"usage export stopped" not in buzz.output()


def _cli_bytes(buzz: BuzzProcess, *args: str) -> bytes:
    done = subprocess.run([sys.executable, "-m", "buzz", *args], env=buzz.env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_buzz_export_writes_what_the_api_streams(setup: dict[str, Any]) -> None:
    buzz, rows = setup["buzz"], setup["rows"]
    api = _get(buzz, "/admin/api/usage/export", ADMIN, since="1d", tz="America/New_York")[2]
    cli = _cli_bytes(buzz, "export", "--since", "1d", "--tz", "America/New_York")
    assert cli == api and len(_csv(cli)) == len(rows)
    acme = _cli_bytes(buzz, "export", "--since", "1d", "--project", "acme", "--format", "jsonl")
    assert {json.loads(line)["project"] for line in acme.splitlines()} == {"acme"}
    bad = subprocess.run([sys.executable, "-m", "buzz", "export", "--since", "soon"], env=buzz.env, capture_output=True)
    assert bad.returncode != 0 and b"since:" in bad.stderr


def test_buzz_usage_json_is_the_api_report(setup: dict[str, Any]) -> None:
    buzz, rows = setup["buzz"], setup["rows"]
    report = json.loads(_cli_bytes(buzz, "usage", "--since", "1d", "--by", "tag:feature", "--json"))
    assert report["by"] == "tag:feature"
    assert report["total"]["requests"] == len(rows)
    assert report["untagged"]["requests"] == 1  # the malformed request carried no tags
    assert sum(g["totals"]["requests"] for g in report["groups"]) == len(rows) - 1
    table = _cli_bytes(buzz, "usage", "--since", "1d", "--by", "tag:feature").decode()
    assert "(untagged)" in table and "search" in table and "chat" in table
