"""Slow and idle clients cannot take buzz down: head deadlines, a connection cap, idle eviction.

Every test runs a real `buzz serve` and drives it with raw sockets.
"""

from __future__ import annotations

import http.client
import json
import resource
import selectors
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from buzz.config import load
from buzz.connections import connection_cap
from fakes.fake_anthropic import FakeAnthropic
from support import BuzzProcess, wait_until

ADMIN_TOKEN = "admin-token-for-slow-client-tests"
HALF_A_HEAD = b"POST /v1/messages HTTP/1.1\r\nhost: buzz\r\ncontent-"
BODY = b'{"model":"claude-sonnet-4-6","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}'
_GENEROUS = 30.0  # seconds to wait for an event that should come far sooner


@contextmanager
def _soft_descriptor_limit(soft: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE set to `soft` for a while (a child started meanwhile keeps it)."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def _connect(buzz: BuzzProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", buzz.port), timeout=_GENEROUS)


def _request(sock: socket.socket, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> None:
    lines = [f"{method} {path} HTTP/1.1", "host: buzz", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def _response(sock: socket.socket) -> tuple[http.client.HTTPResponse, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response, response.read()


def _closed_by_buzz(sock: socket.socket) -> bool:
    """Waits (up to a generous deadline) for buzz to close `sock`; True if it did."""
    sock.settimeout(_GENEROUS)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _read_to_end(sock: socket.socket) -> bytes:
    sock.settimeout(_GENEROUS)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _still_open(socks: list[socket.socket]) -> bool:
    """No socket has been closed by buzz: a closed one would be readable (EOF) at once."""
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        return selector.select(timeout=0) == []


def _healthz(buzz: BuzzProcess) -> int:
    with urllib.request.urlopen(f"{buzz.url}/healthz", timeout=_GENEROUS) as response:
        return int(response.status)


def _counters(buzz: BuzzProcess) -> dict[str, int]:
    request = urllib.request.Request(
        f"{buzz.url}/admin/api/counters", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=_GENEROUS) as response:
        counters: dict[str, int] = json.loads(response.read())
        return counters


def test_five_thousand_idle_sockets_leave_healthz_and_messages_answering(
    tmp_path: Path, fake_session: FakeAnthropic
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 12_000:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is too low to hold 5,000 sockets on each side")
    # buzz starts with a common default soft limit (systemd's 1024) under a high hard one: it
    # must raise its own limit and cap its connections, or 5,000 idle sockets exhaust it.
    env = {"BUZZ_HEADER_TIMEOUT": "600"}  # no deadline fires while the test holds its sockets
    with _soft_descriptor_limit(1024):
        buzz = BuzzProcess(tmp_path / "data", fake_session.url, env=env).start()
    idle: list[socket.socket] = []
    try:
        key = buzz.create_key()
        with _soft_descriptor_limit(hard):
            for i in range(5000):
                sock = _connect(buzz)
                if i % 2:
                    sock.sendall(HALF_A_HEAD)
                idle.append(sock)
            assert _healthz(buzz) == 200
            with _connect(buzz) as sock:
                _request(sock, "POST", "/v1/messages", {"x-api-key": key}, BODY)
                assert _response(sock)[0].status == 200
            assert _still_open(idle)  # the requests were answered with all 5,000 held open
            for sock in idle:
                sock.close()
            idle.clear()
    finally:
        for sock in idle:
            sock.close()
        buzz.stop()


def test_a_connection_that_never_finishes_its_head_is_closed(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    env = {"BUZZ_HEADER_TIMEOUT": "0.5", "BUZZ_ADMIN_TOKEN": ADMIN_TOKEN}
    buzz = BuzzProcess(tmp_path / "data", fake_session.url, env=env).start()
    try:
        silent = _connect(buzz)
        half = _connect(buzz)
        half.sendall(HALF_A_HEAD)
        # On a kept-alive connection, the deadline runs again for the next head.
        kept_alive = _connect(buzz)
        _request(kept_alive, "GET", "/healthz", {})
        assert _response(kept_alive)[0].status == 200
        kept_alive.sendall(HALF_A_HEAD)
        for sock in (silent, half, kept_alive):
            assert _closed_by_buzz(sock)
            sock.close()
        # A whole head in time is served as ever.
        assert _healthz(buzz) == 200
        assert _counters(buzz)["connections_header_timeout"] == 3
    finally:
        buzz.stop()


def test_idle_keep_alive_connections_close_after_the_keep_alive_timeout(
    tmp_path: Path, fake_session: FakeAnthropic
) -> None:
    assert load(None, env={}).keep_alive_timeout == 75
    assert load(None, env={"BUZZ_KEEP_ALIVE_TIMEOUT": "9"}).keep_alive_timeout == 9
    env = {"BUZZ_KEEP_ALIVE_TIMEOUT": "1", "BUZZ_HEADER_TIMEOUT": "600"}
    buzz = BuzzProcess(tmp_path / "data", fake_session.url, env=env).start()
    try:
        with _connect(buzz) as sock:
            _request(sock, "GET", "/healthz", {})
            assert _response(sock)[0].status == 200
            assert _closed_by_buzz(sock)
    finally:
        buzz.stop()


def test_at_the_cap_with_every_connection_busy_a_new_client_gets_503(
    tmp_path: Path, fake_session: FakeAnthropic
) -> None:
    fake_session.clear()
    env = {"BUZZ_MAX_CONNECTIONS": "3", "BUZZ_ADMIN_TOKEN": ADMIN_TOKEN}
    buzz = BuzzProcess(tmp_path / "data", fake_session.url, env=env).start()
    busy: list[socket.socket] = []
    try:
        key = buzz.create_key()
        for _ in range(3):
            sock = _connect(buzz)
            _request(sock, "POST", "/v1/messages", {"x-api-key": key, "x-fake-scenario": "hang"}, BODY)
            busy.append(sock)
        assert wait_until(lambda: len(fake_session.requests) == 3, timeout=_GENEROUS)

        with _connect(buzz) as sock:
            _request(sock, "POST", "/v1/messages", {"x-api-key": key}, BODY)
            response, body = _response(sock)
            assert response.status == 503
            assert response.getheader("x-should-retry") == "true"
            assert response.getheader("retry-after") == "1"
            assert response.getheader("x-buzz-error-source") == "gateway"
            error = json.loads(body)
            # buzz's own error, in the envelope of the surface (Anthropic's for /v1/messages).
            assert error["type"] == "error"
            assert error["error"]["type"] == "gateway_unavailable_error"
            assert error["request_id"] == response.getheader("x-buzz-request-id")
            assert _closed_by_buzz(sock)
        assert len(fake_session.requests) == 3  # the refused request never reached the upstream

        for sock in busy:
            sock.close()
        busy.clear()
        # The hanging requests end when their clients leave; then there is room again.
        assert wait_until(lambda: _healthz_or_none(buzz) == 200, timeout=_GENEROUS)
        assert _counters(buzz)["connections_refused"] == 1
        assert buzz.output().count(b"connection cap reached") == 1
        # The refusal has its access log line like any other answer.
        assert wait_until(lambda: b"POST /v1/messages 503 request_id=req_" in buzz.output(), timeout=_GENEROUS)
    finally:
        for sock in busy:
            sock.close()
        buzz.stop()


def _healthz_or_none(buzz: BuzzProcess) -> int | None:
    try:
        return _healthz(buzz)
    except OSError:
        return None


def test_at_the_cap_the_longest_idle_connection_makes_room(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    env = {"BUZZ_MAX_CONNECTIONS": "3", "BUZZ_HEADER_TIMEOUT": "600"}
    buzz = BuzzProcess(tmp_path / "data", fake_session.url, env=env).start()
    try:
        silent = _connect(buzz)
        half = _connect(buzz)
        half.sendall(HALF_A_HEAD)
        kept_alive = _connect(buzz)
        _request(kept_alive, "GET", "/healthz", {})
        assert _response(kept_alive)[0].status == 200
        # Three connections, all idle: the cap is full. A new client is served, and the
        # connection idle the longest (the silent one) was closed for it.
        with _connect(buzz) as sock:
            _request(sock, "GET", "/healthz", {"connection": "close"})
            assert _response(sock)[0].status == 200
        assert _closed_by_buzz(silent)
        assert _still_open([half, kept_alive])
        for sock in (silent, half, kept_alive):
            sock.close()
        assert buzz.output().count(b"connection cap reached") == 1
    finally:
        buzz.stop()


def test_websocket_upgrades_do_not_hold_places_under_the_cap(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    buzz = BuzzProcess(tmp_path / "data", fake_session.url, env={"BUZZ_MAX_CONNECTIONS": "2"}).start()
    upgrade = {
        "connection": "upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    try:
        for _ in range(3):
            with _connect(buzz) as sock:
                _request(sock, "GET", "/v1/messages", upgrade)
                # buzz serves no websocket route: uvicorn refuses the handshake and closes.
                assert _read_to_end(sock).startswith(b"HTTP/1.1 5")
        assert _healthz(buzz) == 200
    finally:
        buzz.stop()


def test_the_cap_leaves_room_for_upstreams_and_the_database() -> None:
    assert connection_cap(20_000) == 9_872
    assert connection_cap(1024) == 384
    assert connection_cap(20_000, 100) == 100
    assert connection_cap(20_000, 50_000) == 9_872  # a configured cap cannot go above what fits
    assert connection_cap(100) == 1
