"""`buzz upstreams` when it cannot answer: each failure says what is wrong and how to fix it, on
stderr, with a non-zero exit status and nothing on stdout for a script to mistake for data.

(What it prints when it can answer is tested with the console page, in
tests/console/test_console_upstreams.py, against a gateway with a credential pool.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import BuzzProcess, free_port


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BUZZ_", "ANTHROPIC_"))}
    return subprocess.run(
        [sys.executable, "-m", "buzz", "upstreams", *args],
        env={**base, "BUZZ_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_an_admin_token_it_says_which_setting_to_set(tmp_path: Path) -> None:
    done = _run(tmp_path, {})
    assert done.returncode == 1
    assert "no admin token configured: set BUZZ_ADMIN_TOKEN" in done.stderr
    assert done.stdout == ""


def test_with_no_gateway_at_the_address_it_says_so(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    # A gateway listening on every interface is asked on loopback.
    done = _run(tmp_path, {"BUZZ_ADMIN_TOKEN": "operator", "BUZZ_HOST": "0.0.0.0", "BUZZ_PORT": str(port)})  # noqa: S104
    assert done.returncode == 1
    assert f"no buzz gateway reachable at http://127.0.0.1:{port}" in done.stderr
    assert "--url" in done.stderr
    assert done.stdout == ""
    other = free_port()
    done = _run(tmp_path, {"BUZZ_ADMIN_TOKEN": "operator"}, "--json", "--url", f"http://127.0.0.1:{other}")
    assert done.returncode == 1
    assert f"no buzz gateway reachable at http://127.0.0.1:{other}" in done.stderr
    assert done.stdout == ""


def test_an_address_that_is_no_url_is_a_usage_error(tmp_path: Path) -> None:
    done = _run(tmp_path, {"BUZZ_ADMIN_TOKEN": "operator"}, "--url", "127.0.0.1:8080")
    assert done.returncode == 2
    assert "'127.0.0.1:8080' is not an http(s) URL" in done.stderr


def test_a_gateway_without_its_admin_api_says_how_to_turn_it_on(tmp_path: Path, buzz: BuzzProcess) -> None:
    # The shared gateway runs without BUZZ_ADMIN_TOKEN, so it has no admin API.
    done = _run(tmp_path, {"BUZZ_ADMIN_TOKEN": "operator"}, "--url", buzz.url)
    assert done.returncode == 1
    assert f"the gateway at {buzz.url} has no /admin/api/upstreams" in done.stderr
    assert "set BUZZ_ADMIN_TOKEN to turn it on" in done.stderr
    assert done.stdout == ""
