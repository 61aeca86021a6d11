"""Running a real buzz process for tests, and reading what it kept."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from buzz import config as buzz_config
from buzz.app import Gateway
from buzz.proxy.auth import generate_key
from buzz.store import open_store
from buzz.store.base import Store

UPSTREAM_KEY = "sk-ant-upstream-secret-for-tests"


def raw_post(
    url: str, path: str, body: bytes, headers: Mapping[str, str | bytes]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """One POST on a fresh connection with exactly these headers (values may be raw bytes):
    status, headers as received, and the whole body."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", path, body=body, headers=dict(headers))
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheaders(), data


def raw_exchange(port: int, request: bytes) -> bytes:
    """`request`, bytes as they are, on a connection of its own; everything the server sent back
    until it closed the connection (send `connection: close`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BuzzProcess:
    """`buzz serve` in a child process, as an operator would run it."""

    def __init__(
        self, data_dir: Path, upstream_url: str, env: Mapping[str, str] | None = None, new_session: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.new_session = new_session  # its own process group, as a shell gives a command it runs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BUZZ_", "ANTHROPIC_"))},
            "BUZZ_DATA_DIR": str(data_dir),
            "ANTHROPIC_API_KEY": UPSTREAM_KEY,
            "BUZZ_ANTHROPIC_BASE_URL": upstream_url,
            "BUZZ_LEDGER_FLUSH_INTERVAL": "0.01",
            **(env or {}),
        }
        self.log_path = data_dir.parent / f"buzz-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BuzzProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "buzz", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=self.new_session,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"buzz exited early:\n{self.output().decode(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.process.kill()  # never leave a half-started gateway behind
        self.process.wait()
        raise RuntimeError("buzz did not become healthy in time")

    def __enter__(self) -> BuzzProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def output(self) -> bytes:
        return self.log_path.read_bytes() if self.log_path.exists() else b""

    def store(self) -> Store:
        """The store this gateway serves from (its SQLite file, or its PostgreSQL database)."""
        return open_store(self.data_dir / "buzz.sqlite3", self.env.get("BUZZ_DATABASE_URL"))

    def create_key(self, project: str = "test", name: str | None = None) -> str:
        store = self.store()
        new = generate_key()
        store.create_key(new.key_id, project, name, new.secret_hash)
        store.close()
        return new.token

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "buzz", *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def ledger(
        self,
        count: int | None = None,
        where: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 10,
    ) -> list[dict[str, Any]]:
        """Ledger rows (those matching `where`), waiting until at least `count` have been flushed."""
        deadline = time.monotonic() + timeout
        store = self.store() if "BUZZ_DATABASE_URL" in self.env else None
        while True:
            written = store.ledger_rows() if store is not None else read_ledger(self.data_dir / "buzz.sqlite3")
            rows = [row for row in written if where is None or where(row)]
            if count is None or len(rows) >= count or time.monotonic() > deadline:
                if store is not None:
                    store.close()
                return rows
            time.sleep(0.02)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute("SELECT * FROM ledger ORDER BY ts, id")]
        except sqlite3.OperationalError:
            return []
    finally:
        conn.close()


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class InProcessGateway:
    """buzz's real ASGI app on a real uvicorn server, in a thread of the test process, for what
    a child process cannot be given: here, a clock the test controls."""

    def __init__(self, data_dir: Path, env: Mapping[str, str], clock: Callable[[], float]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = {"BUZZ_DATA_DIR": str(data_dir), "BUZZ_LEDGER_FLUSH_INTERVAL": "0.01", **env}
        self.config = buzz_config.load(None, env=settings)
        self.gateway = Gateway(self.config, clock=clock)
        options = uvicorn.Config(
            self.gateway, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning", loop="asyncio"
        )
        self._server = uvicorn.Server(options)
        self._thread = threading.Thread(target=self._server.run, name="buzz-in-process", daemon=True)

    def __enter__(self) -> InProcessGateway:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        if not wait_until(lambda: self._server.started, timeout=20):
            raise RuntimeError("the in-process gateway did not start in time")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)

    def create_key(self, project: str = "test", allowed_models: Sequence[str] | None = None) -> str:
        store = open_store(self.data_dir / "buzz.sqlite3", self.config.database_url)
        new = generate_key()
        store.create_key(new.key_id, project, None, new.secret_hash, allowed_models=allowed_models)
        store.close()
        return new.token

    def ledger(
        self, count: int | None = None, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while True:
            rows = [row for row in read_ledger(self.data_dir / "buzz.sqlite3") if where is None or where(row)]
            if count is None or len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)


def redis_url(db: int) -> str:
    """The Redis a test shares: `BUZZ_TEST_REDIS_URL` if set, else database `db` of the local one.

    Each test area names its own database, so areas do not see each other's keys.
    """
    return os.environ.get("BUZZ_TEST_REDIS_URL") or f"redis://127.0.0.1:6379/{db}"


class RedisServer:
    """A redis-server of a test's own, on a free port: for tests that stop or break Redis, which
    must not do that to the one everybody shares. Nothing is persisted."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(self.work_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_until(self._answers, timeout=20):
            self.stop()
            raise RuntimeError("redis-server did not start")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16) == b"+PONG\r\n"
        except OSError:
            return False

    def pause(self) -> None:
        """An outage that keeps the data: the server stops answering, connections stay open."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
