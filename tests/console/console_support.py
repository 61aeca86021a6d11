"""What the console's tests share: a gateway in this process with clocks the test moves, and a
small HTTP client that keeps cookies and never follows a redirect, so each answer can be read."""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import uvicorn

from buzz import config as buzz_config
from buzz.app import Gateway
from buzz.proxy.auth import generate_key
from buzz.store.sqlite import SQLiteStore
from support import free_port, wait_until

ADMIN_TOKEN = "operator-token-for-console-tests"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class ConsoleGateway:
    """buzz's real ASGI app on a real uvicorn server, in a thread: the console's session expiry
    reads `wall_clock`, its sign-in throttle `clock`, and the test moves both."""

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str],
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = {"BUZZ_DATA_DIR": str(data_dir), "BUZZ_LEDGER_FLUSH_INTERVAL": "0.01", **env}
        self.gateway = Gateway(buzz_config.load(None, env=settings), clock=clock, wall_clock=wall_clock)
        options = uvicorn.Config(
            self.gateway, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning", loop="asyncio"
        )
        self._server = uvicorn.Server(options)
        self._thread = threading.Thread(target=self._server.run, name="buzz-console", daemon=True)

    def __enter__(self) -> ConsoleGateway:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        if not wait_until(lambda: self._server.started, timeout=20):
            raise RuntimeError("the in-process gateway did not start in time")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)


def open_store(data_dir: Path) -> SQLiteStore:
    return SQLiteStore(data_dir / "buzz.sqlite3")


def make_key(data_dir: Path, project: str, name: str | None = None) -> tuple[str, str]:
    """A key made as the CLI makes it: (its id, the whole key)."""
    store = open_store(data_dir)
    try:
        new = generate_key()
        store.create_key(new.key_id, project, name, new.secret_hash)
        return new.key_id, new.token
    finally:
        store.close()


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def set_cookies(self) -> list[str]:
        return [value for key, value in self.headers if key.lower() == "set-cookie"]

    @property
    def location(self) -> str | None:
        return self.header("location")

    def csrf(self) -> str:
        match = _CSRF.search(self.body)
        assert match is not None, "no CSRF token on the page"
        return match[1]


@dataclass
class Client:
    """One browser's worth of cookies, from one client address (sent as X-Forwarded-For, which
    buzz believes when the test trusts 127.0.0.1 as a proxy)."""

    url: str
    address: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, fields: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        host, port = self.url.removeprefix("http://").split(":")
        sent = dict(headers or {})
        if self.cookies:
            sent["cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        if self.address:
            sent["x-forwarded-for"] = self.address
        body = None
        if fields is not None:
            body = urlencode(fields).encode()
            sent["content-type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.getheaders(), response.read().decode())
        finally:
            conn.close()
        for header in reply.set_cookies():
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return reply

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, fields: Mapping[str, str]) -> Reply:
        return self.request("POST", path, fields)

    def sign_in(self, token: str) -> Reply:
        csrf = self.get("/console/sign-in").csrf()
        return self.post("/console/sign-in", {"csrf": csrf, "token": token})

    def csrf(self) -> str:
        """The session's CSRF token, as any page of the console carries it."""
        return self.get("/console/keys").csrf()

    def submit(self, path: str, fields: Mapping[str, str] | None = None) -> Reply:
        """POST a form the way the console's own pages do: with the session's CSRF token."""
        return self.post(path, {"csrf": self.csrf(), **(fields or {})})
