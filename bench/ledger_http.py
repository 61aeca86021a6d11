"""Console pages and the admin API over HTTP on a big ledger, for bench/ledger_scale.py.

A real `buzz serve` runs on the generated data directory. The operator signs in with the admin
token, a member with a console token of the busiest project, each through the sign-in form like
a browser (CSRF token, session cookie). Pages that are not built yet are skipped and named.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import re
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from buzz import console_tokens
from buzz.reports import local_text
from buzz.store.sqlite import SQLiteStore
from ledger_queries import percentile
from procs import LOCALHOST, Service, buzz_env, free_port, rss_kib, wait_ready

# Each page with the query strings it is timed with: its default view, and a month.
CONSOLE_PAGES = {
    "usage": ("", "?range=30d", "?range=30d&by=key", "?range=30d&by=user", "?range=30d&tz=Asia/Kolkata"),
    "features": ("", "?range=30d"),
    "cache": ("", "?range=30d"),
    "keys": ("",),
}
ADMIN_USAGE = "/admin/api/usage"
ADMIN_QUERIES = ("?range=7d", "?range=30d", "?range=30d&by=user", "?range=30d&by=tag:feature")
EXPORT_CHUNK = 1 << 16
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Browser:
    """Cookies and nothing else, on a fresh connection per request (as the console tests do)."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, fields: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        sent = dict(headers or {})
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if fields is not None:
            body = urlencode(fields).encode()
            sent["content-type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    cookie: SimpleCookie = SimpleCookie()
                    cookie.load(value)
                    for key, morsel in cookie.items():
                        self.cookies[key] = morsel.value
            return response.status, data
        finally:
            conn.close()

    def sign_in(self, token: str) -> None:
        status, page = self.request("GET", "/console/sign-in")
        match = _CSRF.search(page.decode())
        if status != 200 or match is None:
            raise RuntimeError(f"no sign-in form (HTTP {status})")
        status, _ = self.request("POST", "/console/sign-in", {"csrf": match[1], "token": token})
        if status != 303:
            raise RuntimeError(f"sign-in refused (HTTP {status})")


def unbuilt_pages() -> set[str]:
    """Console sections that are only a placeholder on this revision."""
    web: Any = importlib.import_module("buzz.console.web")
    return set(getattr(web, "LATER", {}))


class RssSampler:
    """The server's VmRSS, sampled every 50 ms while a measurement runs."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, rss_kib(self._pid))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _time(browser: Browser, path: str, repeat: int, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    seconds, statuses, size = [], set(), 0
    for _ in range(repeat):
        started = time.perf_counter()
        status, body = browser.request("GET", path, headers=headers)
        seconds.append(time.perf_counter() - started)
        statuses.add(status)
        size = len(body)
    return {
        "path": path,
        "runs": repeat,
        "statuses": sorted(statuses),
        "bytes": size,
        "p50_ms": round(percentile(seconds, 50) * 1000, 2),
        "p95_ms": round(percentile(seconds, 95) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def _export(port: int, path: str, token: str, pid: int) -> dict[str, Any]:
    """One export read to the end as fast as the client can, the server's RSS sampled meanwhile."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=300)
    size = lines = 0
    with RssSampler(pid) as rss:
        started = time.perf_counter()
        conn.request("GET", path, headers={"authorization": f"Bearer {token}"})
        response = conn.getresponse()
        while chunk := response.read(EXPORT_CHUNK):
            size += len(chunk)
            lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
    conn.close()
    rows = lines - 1 if "format=csv" in path else lines  # the CSV header is a line, not a row
    return {
        "path": path,
        "status": response.status,
        "rows": rows,
        "bytes": size,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds) if seconds else None,
        "mib_per_s": round(size / seconds / 2**20, 1) if seconds else None,
        "server_peak_rss_kib": rss.peak,
    }


def measure(
    data_dir: Path, project: str, end: float, repeat: int, work: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    store = SQLiteStore(data_dir / "buzz.sqlite3")
    try:
        made = console_tokens.generate()
        store.create_console_token(made.token_id, project, "ledger benchmark", made.secret_hash)
    finally:
        store.close()
    admin_token = secrets.token_urlsafe(24)
    port = free_port()
    env = buzz_env(data_dir, free_port(), free_port()) | {"BUZZ_ADMIN_TOKEN": admin_token}
    argv = [sys.executable, "-m", "buzz", "serve", "--host", LOCALHOST, "--port", str(port)]
    server = Service("buzz", argv, env, work / "buzz-ledger-scale.log")
    stack.callback(server.stop)
    server.start()
    wait_ready(server, f"http://{LOCALHOST}:{port}/healthz", timeout=120)
    # The pages use the server's clock: they look back from now, which is `lag_s` after the
    # ledger's last row. The exports name the ledger's own last 30 days.
    out: dict[str, Any] = {"pages": [], "exports": [], "skipped": [], "idle_rss_kib": rss_kib(server.pid)}
    out["lag_s"] = round(time.time() - end)
    unbuilt = unbuilt_pages()
    operator, member = Browser(port), Browser(port)
    operator.sign_in(admin_token)
    member.sign_in(made.token)
    for page, queries in CONSOLE_PAGES.items():
        if page in unbuilt:
            out["skipped"].append(f"/console/{page}: not built yet on this revision")
            continue
        for who, browser in (("operator", operator), ("member", member)):
            for query in queries:
                with RssSampler(server.pid) as rss:
                    result = _time(browser, f"/console/{page}{query}", repeat)
                out["pages"].append({"who": who, **result, "server_peak_rss_kib": rss.peak})
    bearers = {"operator": admin_token, "member": made.token}
    status, _ = Browser(port).request("GET", f"{ADMIN_USAGE}?range=7d", headers=_bearer(admin_token))
    if status == 404:
        out["skipped"].append(f"{ADMIN_USAGE}: not on this revision")
        return _stopped(server, out)
    for who, token in bearers.items():
        for query in ADMIN_QUERIES:
            with RssSampler(server.pid) as rss:
                result = _time(Browser(port), ADMIN_USAGE + query, repeat, _bearer(token))
            out["pages"].append({"who": f"{who} (API)", **result, "server_peak_rss_kib": rss.peak})
    since, until = local_text(end - 30 * 86400, UTC), local_text(end + 1, UTC)
    for who, fmt, tz in (
        ("operator", "csv", "UTC"),
        ("operator", "jsonl", "UTC"),
        ("operator", "csv", "Europe/Paris"),
        ("member", "csv", "UTC"),
    ):
        params = {"since": since, "until": until, "format": fmt, "tz": tz}
        out["exports"].append(
            {"who": who, **_export(port, f"{ADMIN_USAGE}/export?{urlencode(params)}", bearers[who], server.pid)}
        )
    return _stopped(server, out)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _stopped(server: Service, out: dict[str, Any]) -> dict[str, Any]:
    out["rss_after_kib"] = rss_kib(server.pid)
    server.stop()
    return out
