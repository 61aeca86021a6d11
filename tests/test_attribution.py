"""`x-buzz-user` and `x-buzz-tags`: client text, read as UTF-8 and refused when it is not."""

from __future__ import annotations

import http.client
import json

from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess

BODY = b'{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}'


def _post(buzz: BuzzProcess, key: str, extra: dict[str, bytes]) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", buzz.port, timeout=30)
    conn.request("POST", "/v1/messages", body=BODY, headers={"x-api-key": key.encode(), **extra})
    response = conn.getresponse()
    document = json.loads(response.read())
    conn.close()
    return response.status, document


def test_utf8_names_are_stored_as_sent(buzz: BuzzProcess, fake: FakeAnthropic, key: str) -> None:
    user, tags = "Zoë Ångström 山田", "feature=recherche-élargie,team=機械学習"
    status, _ = _post(buzz, key, {"x-buzz-user": user.encode(), "x-buzz-tags": tags.encode()})
    assert status == 200
    row = buzz.ledger(count=1, where=lambda r: r["user_id"] == user)
    assert [(r["user_id"], json.loads(r["tags"])) for r in row] == [
        (user, ["feature=recherche-élargie", "team=機械学習"])
    ]
    # Nothing of buzz's own reaches the vendor.
    assert all(not name.lower().startswith(b"x-buzz-") for name, _ in fake.requests[-1].raw_headers)


def test_attribution_that_is_not_utf8_text_is_refused_naming_the_header(
    buzz: BuzzProcess, fake: FakeAnthropic, key: str
) -> None:
    for header, value, reason in (
        ("x-buzz-user", "Zoë".encode("latin-1"), "not valid UTF-8"),
        ("x-buzz-tags", b"team=\xff\xfe", "not valid UTF-8"),
        ("x-buzz-user", b"a\tb", "control characters"),
        ("x-buzz-tags", ("t=" + "x" * 70).encode(), "longer than 64"),
        ("x-buzz-tags", ",".join(f"t{i}=v" for i in range(17)).encode(), "more than 16"),
    ):
        status, error = _post(buzz, key, {header: value})
        assert status == 400, header
        assert error["error"]["type"] == "gateway_invalid_request_error"  # type: ignore[index]
        message = str(error["error"]["message"])  # type: ignore[index]
        assert message.startswith(header) and reason in message
    assert fake.requests == []  # refused before anything was forwarded
