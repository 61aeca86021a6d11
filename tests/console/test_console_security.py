"""The console's security, over real HTTP: sessions, cookies, CSRF, the sign-in throttle, headers.

The gateway runs in this process so the test holds its clocks: the wall clock that sessions
expire by, and the monotonic one of the sign-in throttle.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import ADMIN_TOKEN, Client, ConsoleGateway, make_key, open_store

from buzz import console_tokens
from buzz.console.sessions import Signer
from support import Clock

LIFETIME = 3600
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
ENV = {
    "BUZZ_ADMIN_TOKEN": ADMIN_TOKEN,
    "BUZZ_CONSOLE_SESSION_LIFETIME": str(LIFETIME),
    # The test's clients are told apart by the X-Forwarded-For they send.
    "BUZZ_TRUSTED_PROXIES": "127.0.0.1",
}
PAGES = [
    "/console",
    "/console/",
    "/console/keys",
    "/console/keys/new",
    "/console/keys/abcdefabcdef",
    "/console/keys/abcdefabcdef/revoke",
    "/console/projects",
    "/console/projects/acme",
    "/console/tokens",
    "/console/tokens/abcdefabcdef/revoke",
    "/console/usage",
    "/console/features",
    "/console/cache",
    "/console/upstreams",
]
FORMS = [
    "/console/keys",
    "/console/keys/abcdefabcdef",
    "/console/keys/abcdefabcdef/revoke",
    "/console/projects",
    "/console/projects/acme",
    "/console/projects/acme/balance",
    "/console/tokens",
    "/console/tokens/abcdefabcdef/revoke",
    "/console/sign-out",
]


class Clocks:
    def __init__(self) -> None:
        self.monotonic = Clock(1000.0)
        self.wall = Clock(1_800_000_000.0)


@pytest.fixture(scope="module")
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, clocks: Clocks) -> Iterator[ConsoleGateway]:
    data_dir = tmp_path_factory.mktemp("console-security") / "data"
    with ConsoleGateway(data_dir, ENV, clocks.monotonic, clocks.wall) as running:
        store = open_store(data_dir)
        for project in ("acme", "globex"):
            store.save_project(project, {}, create=True)
        store.close()
        yield running


def _client(gateway: ConsoleGateway) -> Client:
    """A client of its own address, so no test's failed sign-ins count against another's."""
    return Client(gateway.url, address=f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}")


def _operator(gateway: ConsoleGateway) -> Client:
    client = _client(gateway)
    assert client.sign_in(ADMIN_TOKEN).status == 303
    return client


def _console_token(gateway: ConsoleGateway, project: str, name: str = "member") -> tuple[str, str]:
    store = open_store(gateway.data_dir)
    try:
        made = console_tokens.generate()
        store.create_console_token(made.token_id, project, name, made.secret_hash)
        return made.token_id, made.token
    finally:
        store.close()


def _signed_out(reply: object) -> bool:
    return getattr(reply, "status", None) == 303 and getattr(reply, "location", None) == "/console/sign-in"


def test_without_a_session_every_page_and_form_redirects_to_sign_in(gateway: ConsoleGateway) -> None:
    client = _client(gateway)
    for path in PAGES:
        assert _signed_out(client.get(path)), path
    for path in FORMS:
        assert _signed_out(client.post(path, {"csrf": "x"})), path
    page = client.get("/console/sign-in")
    assert page.status == 200 and 'action="/console/sign-in"' in page.body


def test_forged_tampered_and_foreign_cookies_are_refused(gateway: ConsoleGateway) -> None:
    client = _operator(gateway)
    good = client.cookies["buzz_console"]
    assert client.get("/console/keys").status == 200
    version, payload, signature = good.split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert document["kind"] == "operator"

    def encoded(changed: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()

    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    other_secret = Signer(secrets.token_bytes(32), lambda: 1_800_000_000.0)
    sign_in_cookie = _client(gateway)
    sign_in_cookie.get("/console/sign-in")
    forgeries = {
        "garbage": "not-a-session",
        "empty": "",
        "flipped signature": f"{version}.{payload}.{flipped}",
        "no signature": f"{version}.{payload}",
        "tampered payload": f"{version}.{encoded({**document, 'expires': document['expires'] + 10**6})}.{signature}",
        "a project instead": f"{version}.{encoded({**document, 'kind': 'project', 'project': 'acme'})}.{signature}",
        "another secret": other_secret.operator(ADMIN_TOKEN, LIFETIME),
        "the sign-in form's cookie": sign_in_cookie.cookies["buzz_console_sign_in"],
        "too long": good + "A" * 4096,
    }
    for name, cookie in forgeries.items():
        forged = _client(gateway)
        forged.cookies["buzz_console"] = cookie
        reply = forged.get("/console/keys")
        assert _signed_out(reply), name
        assert "buzz_console" not in forged.cookies, name  # the browser is told to forget it
    assert client.get("/console/keys").status == 200  # the real one still works


def test_a_session_expires_by_the_wall_clock(gateway: ConsoleGateway, clocks: Clocks) -> None:
    client = _operator(gateway)
    start = clocks.wall.now
    try:
        clocks.wall.now = start + LIFETIME - 1
        assert client.get("/console/keys").status == 200
        clocks.wall.now = start + LIFETIME
        assert _signed_out(client.get("/console/keys"))
    finally:
        clocks.wall.now = start


def test_a_post_without_the_sessions_csrf_token_is_403(gateway: ConsoleGateway) -> None:
    client = _operator(gateway)
    other = _operator(gateway)
    form = {"project": "acme", "name": "csrf-probe"}
    for fields in (form, {**form, "csrf": ""}, {**form, "csrf": "wrong"}, {**form, "csrf": other.csrf()}):
        reply = client.post("/console/keys", fields)
        assert reply.status == 403, fields
        assert "security token" in reply.body
    store = open_store(gateway.data_dir)
    try:
        assert not [key for key in store.list_keys() if key.name == "csrf-probe"]
        assert client.submit("/console/keys", form).status == 200
        assert [key.project for key in store.list_keys() if key.name == "csrf-probe"] == ["acme"]
    finally:
        store.close()
    # Sign-out and sign-in are forms too.
    assert client.post("/console/sign-out", {}).status == 403
    assert client.get("/console/keys").status == 200  # still signed in
    fresh = _client(gateway)
    fresh.get("/console/sign-in")
    assert fresh.post("/console/sign-in", {"token": ADMIN_TOKEN}).status == 403
    assert fresh.post("/console/sign-in", {"token": ADMIN_TOKEN, "csrf": other.csrf()}).status == 403
    assert "buzz_console" not in fresh.cookies
    # Signing out, with the token, ends the session in this browser.
    reply = client.submit("/console/sign-out")
    assert _signed_out(reply) and "buzz_console" not in client.cookies
    assert _signed_out(client.get("/console/keys"))


def test_repeated_failed_sign_ins_get_429_until_the_window_ends(gateway: ConsoleGateway, clocks: Clocks) -> None:
    client = _client(gateway)
    for n in range(10):
        reply = client.sign_in(f"buzzc-{n:012d}-{'x' * 32}")
        assert reply.status == 401, n
        assert "buzz_console" not in client.cookies
    throttled = client.sign_in(ADMIN_TOKEN)  # even the right token: the address is turned away first
    assert throttled.status == 429
    retry = throttled.header("retry-after")
    assert retry is not None and 0 < int(retry) <= 300
    assert "Too many failed sign-ins" in throttled.body and "buzz_console" not in client.cookies
    assert _operator(gateway).get("/console/keys").status == 200  # another address is not affected
    clocks.monotonic.now += 300
    assert client.sign_in(ADMIN_TOKEN).status == 303
    assert client.get("/console/keys").status == 200


def test_an_api_key_never_signs_in(gateway: ConsoleGateway) -> None:
    _, key = make_key(gateway.data_dir, "acme", "a real key")
    client = _client(gateway)
    for token in (key, f"Bearer {key}", key.replace("buzz-", "buzzc-", 1)):
        reply = client.sign_in(token)
        assert reply.status == 401, token
        assert "buzz_console" not in client.cookies
    assert "That is an API key" in client.sign_in(key).body
    assert _signed_out(client.get("/console/keys"))


def test_the_session_cookie_is_httponly_strict_and_scoped(gateway: ConsoleGateway) -> None:
    client = _client(gateway)
    reply = client.sign_in(ADMIN_TOKEN)
    [session] = [cookie for cookie in reply.set_cookies() if cookie.startswith("buzz_console=")]
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in session.split(";")[1:]}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=strict"
    assert attributes["path"] == "Path=/console"
    assert attributes["max-age"] == f"Max-Age={LIFETIME}"
    assert "secure" not in attributes  # plain http, and no https public URL
    # Behind a trusted proxy that says the browser used https, the cookie is Secure.
    behind = _client(gateway)
    csrf = behind.get("/console/sign-in", headers={"x-forwarded-proto": "https"}).csrf()
    reply = behind.request(
        "POST", "/console/sign-in", {"csrf": csrf, "token": ADMIN_TOKEN}, headers={"x-forwarded-proto": "https"}
    )
    [session] = [cookie for cookie in reply.set_cookies() if cookie.startswith("buzz_console=")]
    assert "secure" in session.lower()


def test_the_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    env = {**ENV, "BUZZ_PUBLIC_URL": "https://gateway.example.com"}
    with ConsoleGateway(tmp_path / "data", env, Clock(), Clock(1_800_000_000.0)) as running:
        client = Client(running.url)
        form = client.get("/console/sign-in")
        assert all("; Secure" in cookie for cookie in form.set_cookies())
        reply = client.sign_in(ADMIN_TOKEN)
        [session] = [cookie for cookie in reply.set_cookies() if cookie.startswith("buzz_console=")]
        assert "; Secure" in session and "HttpOnly" in session


def test_every_answer_carries_the_security_headers(gateway: ConsoleGateway) -> None:
    client = _operator(gateway)
    answers = {
        "sign-in": _client(gateway).get("/console/sign-in"),
        "keys": client.get("/console/keys"),
        "usage": client.get("/console/usage?by=tag:feature"),
        "features": client.get("/console/features"),
        "cache": client.get("/console/cache"),
        "bad query": client.get("/console/usage?tz=Nowhere"),
        "not found": client.get("/console/keys/nosuchkey000"),
        "no session": _client(gateway).get("/console/keys"),
        "style sheet": client.get("/console/static/console.css"),
        "script": client.get("/console/static/confirm.js"),
        "uPlot": client.get("/console/static/vendor/uplot/uPlot.iife.min.js"),
    }
    for name, reply in answers.items():
        assert reply.header("content-security-policy") == CSP, name
        assert reply.header("x-content-type-options") == "nosniff", name
        assert reply.header("referrer-policy") == "no-referrer", name
        assert reply.header("x-frame-options") == "DENY", name
        expected = "no-cache" if name in ("style sheet", "script", "uPlot") else "no-store"
        assert reply.header("cache-control") == expected, name
    assert answers["not found"].status == 404
    assert (
        answers["style sheet"].header(
            "content-type",
        )
        == "text/css; charset=utf-8"
    )
    assert (answers["script"].header("content-type") or "").startswith(("text/javascript", "application/javascript"))
    assert answers["bad query"].status == 400
    for name in ("sign-in", "keys", "not found", "usage", "features", "cache", "bad query"):
        body = answers[name].body
        # No inline script or style: every script has a src, no element has a style attribute.
        assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)", body), name
        assert not re.search(r"<style\b|\sstyle=", body), name
        assert not re.search(r"\son[a-z]+=", body), name  # no inline event handler either
        assert "http://" not in body and "https://" not in body, name  # nothing from another origin


def test_a_member_session_ends_when_its_token_is_revoked(gateway: ConsoleGateway) -> None:
    token_id, token = _console_token(gateway, "acme")
    client = _client(gateway)
    assert client.sign_in(token).status == 303
    page = client.get("/console/keys")
    assert page.status == 200 and "Project <strong>acme</strong>" in page.body
    store = open_store(gateway.data_dir)
    try:
        assert store.revoke_console_token(token_id)
    finally:
        store.close()
    assert _signed_out(client.get("/console/keys"))
    assert client.sign_in(token).status == 401


def test_an_operator_session_ends_when_the_operator_token_changes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    wall = Clock(1_800_000_000.0)
    with ConsoleGateway(data_dir, ENV, Clock(), wall) as first:
        client = _operator(first)
        cookie = client.cookies["buzz_console"]
    # Another process on the same database reads the same signing secret: the session holds.
    with ConsoleGateway(data_dir, ENV, Clock(), wall) as second:
        same = Client(second.url, cookies={"buzz_console": cookie})
        assert same.get("/console/keys").status == 200
    with ConsoleGateway(data_dir, {**ENV, "BUZZ_ADMIN_TOKEN": "a-new-operator-token"}, Clock(), wall) as third:
        changed = Client(third.url, cookies={"buzz_console": cookie})
        assert _signed_out(changed.get("/console/keys"))
    with ConsoleGateway(data_dir, {k: v for k, v in ENV.items() if k != "BUZZ_ADMIN_TOKEN"}, Clock(), wall) as fourth:
        unset = Client(fourth.url, cookies={"buzz_console": cookie})
        assert _signed_out(unset.get("/console/keys"))
        assert unset.sign_in(ADMIN_TOKEN).status == 401  # no operator token: no operator sign-in


def test_a_member_reaches_nothing_of_another_project(gateway: ConsoleGateway) -> None:
    theirs_id, _ = make_key(gateway.data_dir, "globex", "globex key")
    ours_id, _ = make_key(gateway.data_dir, "acme", "acme key")
    their_token_id, _ = _console_token(gateway, "globex", "globex team")
    _, token = _console_token(gateway, "acme", "acme team")
    member = _client(gateway)
    assert member.sign_in(token).status == 303

    for path in ("/console/keys?project=globex", "/console/keys", "/console/tokens?project=globex"):
        page = member.get(path)
        assert page.status == 200, path
        assert theirs_id not in page.body and their_token_id not in page.body and "globex" not in page.body, path
    assert ours_id in member.get("/console/keys?project=globex").body  # its own, whatever the query says
    assert 'href="/console/projects"' not in member.get("/console/keys").body
    for path in (
        f"/console/keys/{theirs_id}",
        f"/console/keys/{theirs_id}/revoke",
        f"/console/tokens/{their_token_id}/revoke",
        "/console/projects",
        "/console/projects/globex",
        "/console/projects/acme",
    ):
        reply = member.get(path)
        assert reply.status == 404, path
        assert theirs_id not in reply.body and their_token_id not in reply.body, path
    changes = {
        f"/console/keys/{theirs_id}/revoke": {},
        f"/console/keys/{theirs_id}": {"name": "taken", "rpm": "1"},
        "/console/keys": {"project": "globex", "name": "planted"},
        f"/console/tokens/{their_token_id}/revoke": {},
        "/console/tokens": {"project": "globex", "name": "planted"},
        "/console/projects": {"name": "planted"},
        "/console/projects/globex": {"rpm": "1"},
        "/console/projects/globex/balance": {"usd": "1000"},
    }
    for path, fields in changes.items():
        assert member.submit(path, fields).status == 404, path
    store = open_store(gateway.data_dir)
    try:
        theirs = next(key for key in store.list_keys("globex") if key.id == theirs_id)
        assert theirs.active and theirs.name == "globex key" and theirs.limits.rpm is None
        assert not [key for key in store.list_keys() if key.name == "planted"]
        assert store.find_console_token(their_token_id).revoked_at is None  # type: ignore[union-attr]
        assert not [token for token in store.list_console_tokens() if token.name == "planted"]
        globex = store.project("globex")
        assert globex is not None and globex.limits.rpm is None and globex.balance_nanos == 0
        assert store.project("planted") is None
    finally:
        store.close()
