"""The operator's admin API: keys, projects, limits and balances over HTTP, behind a token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, raw_post

TOKEN = "operator-token-for-tests"
BODY = b'{"model":"claude-haiku-4-5","max_tokens":10,"messages":[]}'


def _call(url: str, method: str, path: str, body: object = None, token: str = TOKEN) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method, headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_admin_api_manages_keys_projects_and_balances(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake_session.url, env={"BUZZ_ADMIN_TOKEN": TOKEN}) as process:
        url = process.url
        status, project = _call(url, "POST", "/admin/api/projects", {"name": "acme", "prepaid": True, "rpm": 100})
        assert status == 201 and project["prepaid"] is True and project["limits"]["rpm"] == 100  # type: ignore[index]
        status, created = _call(url, "POST", "/admin/api/keys", {"project": "acme", "name": "ci", "rpm": 2})
        assert status == 201
        key, key_id = str(created["key"]), str(created["id"])
        assert key.startswith(f"buzz-{key_id}-")
        # Prepaid with no money: refused until the operator adds some.
        assert raw_post(url, "/v1/messages", BODY, {"x-api-key": key})[0] == 402
        status, topped = _call(url, "POST", "/admin/api/projects/acme/balance", {"usd": "0.50"})
        assert (status, topped["balance_usd"]) == (200, "0.50")
        assert raw_post(url, "/v1/messages", BODY, {"x-api-key": key})[0] == 200
        assert raw_post(url, "/v1/messages", BODY, {"x-api-key": key})[0] == 200
        assert raw_post(url, "/v1/messages", BODY, {"x-api-key": key})[0] == 429  # the key's rpm of 2
        status, patched = _call(url, "PATCH", f"/admin/api/keys/{key_id}", {"rpm": None})
        assert status == 200 and patched["limits"]["rpm"] is None  # type: ignore[index]
        assert raw_post(url, "/v1/messages", BODY, {"x-api-key": key})[0] == 200  # from the next request
        status, listing = _call(url, "GET", "/admin/api/keys")
        assert status == 200 and [k["id"] for k in listing["data"]] == [key_id]  # type: ignore[union-attr,index]
        assert key.split("-")[2] not in json.dumps(listing)  # no secret in listings
        status, projects = _call(url, "GET", "/admin/api/projects")
        balance = projects["data"][0]["balance_usd"]  # type: ignore[index]
        assert status == 200 and 0 < float(balance) < 0.5
        assert _call(url, "POST", f"/admin/api/keys/{key_id}/revoke")[0] == 200
        assert raw_post(url, "/v1/messages", BODY, {"x-api-key": key})[0] == 401
        # Wrong token, bad input, unknown route.
        status, error = _call(url, "GET", "/admin/api/keys", token="wrong")
        assert status == 401 and error["error"]["type"] == "gateway_authentication_error"  # type: ignore[index]
        assert _call(url, "POST", "/admin/api/projects", {"name": "x", "rpm": "lots"})[0] == 400
        assert _call(url, "POST", "/admin/api/projects/nope/balance", {"usd": "1"})[0] == 404
        assert _call(url, "GET", "/admin/api/nothing")[0] == 404


def test_admin_api_is_off_without_a_token(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake_session.url) as process:
        status, error = _call(process.url, "GET", "/admin/api/keys", token="")
        assert status == 404 and "BUZZ_ADMIN_TOKEN" in error["error"]["message"]  # type: ignore[index]


def test_admin_api_refuses_what_the_cli_refuses_naming_the_field(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    """One typed definition validates both front ends: bad input is a 400 naming the field, and
    nothing reaches the store that the request path would later choke on."""
    with BuzzProcess(tmp_path / "data", fake_session.url, env={"BUZZ_ADMIN_TOKEN": TOKEN}) as process:
        url = process.url
        refused = [
            ({"project": "p", "models": "claude-*"}, "models"),
            ({"project": "p", "expires_at": "tomorrow"}, "expires_at"),
            ({"project": "p", "expires_at": "2027-01-31T00:00:00"}, "expires_at"),  # no offset: ambiguous
            ({"project": "p", "rpm": -1}, "rpm"),
            ({"project": "p", "rpm": True}, "rpm"),
            ({"project": "p", "daily_usd": "0.0000000001"}, "daily_usd"),
            ({"project": "p", "monthly_usd": "-5"}, "monthly_usd"),
            ({"project": "p", "models": ["claude-*", "has space"]}, "models"),
            ({"project": "p", "limits": {}}, "limits"),  # unknown fields are refused, not ignored
            ({"project": "no/slash"}, "project"),
            ({"name": "no project"}, "project"),
        ]
        for body, field in refused:
            status, error = _call(url, "POST", "/admin/api/keys", body)
            message = error["error"]["message"]  # type: ignore[index]
            assert (status, error["error"]["type"]) == (400, "gateway_invalid_request_error"), body  # type: ignore[index]
            assert field in message, (body, message)
        assert _call(url, "GET", "/admin/api/keys")[1] == {"data": []}  # nothing was stored
        for body, field in (({"usd": "1e-12"}, "usd"), ({"usd": "lots"}, "usd"), ({}, "usd")):
            _call(url, "POST", "/admin/api/projects", {"name": "p"})
            status, error = _call(url, "POST", "/admin/api/projects/p/balance", body)
            assert status == 400 and field in error["error"]["message"]  # type: ignore[index]
        assert _call(url, "PATCH", "/admin/api/projects/p", {"prepaid": "yes"})[0] == 400
        # The same values through the CLI are refused with the same field named.
        for args, field in (
            (["--models", "has space"], "models"),
            (["--rpm", "-1"], "rpm"),
            (["--daily-usd", "0.0000000001"], "daily_usd"),
            (["--expires", "tomorrow"], "expires"),
        ):
            result = process.cli("keys", "create", "--project", "p", *args)
            assert result.returncode != 0 and field in result.stderr, (args, result.stderr)
        # Well-formed values work end to end, the expiry and allow-list included.
        status, created = _call(
            url,
            "POST",
            "/admin/api/keys",
            {"project": "p", "models": ["claude-*"], "expires_at": "2999-01-01T00:00:00Z"},
        )
        assert status == 201 and created["expires_at"] == "2999-01-01T00:00:00Z"
        assert created["models"] == ["claude-*"]
        assert raw_post(url, "/v1/messages", BODY, {"x-api-key": str(created["key"])})[0] == 200
        status, patched = _call(
            url, "PATCH", f"/admin/api/keys/{created['id']}", {"expires_at": "2020-01-01T00:00:00+02:00"}
        )
        assert status == 200 and patched["expires_at"] == "2019-12-31T22:00:00Z"
        assert raw_post(url, "/v1/messages", BODY, {"x-api-key": str(created["key"])})[0] == 403


def test_the_admin_token_needs_the_bearer_scheme(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    with BuzzProcess(tmp_path / "data", fake_session.url, env={"BUZZ_ADMIN_TOKEN": TOKEN}) as process:
        for value, status in (
            (TOKEN, 401),
            (f"Token {TOKEN}", 401),
            (f"Bearer {TOKEN}", 200),
            (f"bearer {TOKEN}", 200),
        ):
            request = urllib.request.Request(process.url + "/admin/api/keys", headers={"authorization": value})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == status, value
            except urllib.error.HTTPError as error:
                assert error.code == status, value
