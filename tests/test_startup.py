"""`buzz serve` says what it serves, and says "listening" only when it is."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from buzz import providers
from support import free_port


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    credentials = {provider.credential_env for provider in providers.REGISTRY}
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BUZZ_") and k not in credentials}
    return {**inherited, **extra}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def _serving(cwd: Path, env: Mapping[str, str]) -> Iterator[Path]:
    """`buzz serve` run from `cwd` until it answers /healthz; yields the file its output goes to."""
    port = free_port()
    log_path = cwd / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "buzz", "serve", "--port", str(port)],
            cwd=cwd,
            env=_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not _healthy(f"http://127.0.0.1:{port}"):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "buzz did not answer /healthz"
            time.sleep(0.05)
        yield log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_port_already_taken_is_one_clear_error_and_never_listening(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "buzz", "serve", "--port", str(port)],
            env=_env({"BUZZ_DATA_DIR": str(tmp_path / "data"), "ANTHROPIC_API_KEY": "sk-test"}),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "listening" not in output
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in output
    # It stopped before opening anything: no database was made.
    assert not (tmp_path / "data").exists()


def test_start_up_names_the_vendors_and_the_absolute_database_path(tmp_path: Path) -> None:
    env = {"BUZZ_DATA_DIR": "relative-data", "ANTHROPIC_API_KEY": "sk-ant-x", "OPENAI_API_KEY": "sk-x"}
    with _serving(tmp_path, env) as log_path:
        output = log_path.read_text()
    database = tmp_path.resolve() / "relative-data" / "buzz.sqlite3"
    assert database.exists()
    assert str(database) in output
    assert str(database.parent) in output
    vendors = next(line for line in output.splitlines() if "vendors with a credential" in line)
    assert "vendors with a credential: anthropic (1), openai (1);" in vendors  # (credentials in each pool)
    assert "without one (their models are not routable): google, xai" in vendors
    assert "NO VENDOR CREDENTIAL" not in output
    # "listening" comes last, once the socket serves.
    assert output.index("buzz listening on http://127.0.0.1:") > output.index(str(database))


def test_no_credential_at_all_is_a_loud_warning_but_buzz_starts(tmp_path: Path) -> None:
    with _serving(tmp_path, {"BUZZ_DATA_DIR": str(tmp_path / "data")}) as log_path:
        output = log_path.read_text()
    warning = next(line for line in output.splitlines() if "NO VENDOR CREDENTIAL" in line)
    assert "WARNING" in warning and "every model is unroutable" in warning
    for variable in (provider.credential_env for provider in providers.REGISTRY):
        assert variable in warning
    assert "buzz listening on" in output
