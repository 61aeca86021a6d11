"""Closed-loop HTTP load: wrk when installed, else an aiohttp client with the same interface.

Both keep `concurrency` keep-alive connections busy for a fixed time and report requests,
p50 and p99 latency, and errors.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from procs import pin_prefix

WRK_SCRIPT = Path(__file__).with_name("post.lua")
MODEL = "claude-sonnet-4-5"
CHAT_MODEL = "gpt-5.5"  # routed by buzz to the OpenAI upstream
# Generous, so a slow large-body run shows up as latency rather than as wrk timeouts.
_REQUEST_TIMEOUT_S = 10
_PAD = b"The quick brown fox jumps over the lazy dog. "


def _padded(head: bytes, tail: bytes, size: int) -> bytes:
    room = size - len(head) - len(tail)
    if room < 1:
        raise ValueError(f"{size} bytes is too small for a request")
    body = head + (_PAD * (room // len(_PAD) + 1))[:room] + tail
    json.loads(body)  # padding is plain ASCII, but a broken body would make every figure wrong
    return body


def message_body(size: int, *, stream: bool = False) -> bytes:
    """A valid Messages API request of exactly `size` bytes, padded inside the user's text."""
    head = b'{"model":"%s","max_tokens":16,%s"messages":[{"role":"user","content":"' % (
        MODEL.encode(),
        b'"stream":true,' if stream else b"",
    )
    return _padded(head, b'"}]}', size)


def chat_body(size: int) -> bytes:
    """A valid, non-streaming Chat Completions request of exactly `size` bytes, padded likewise."""
    head = b'{"model":"%s","messages":[{"role":"user","content":"' % CHAT_MODEL.encode()
    return _padded(head, b'"}]}', size)


def request_headers(key: str | None, auth: str = "x-api-key") -> dict[str, str]:
    """The headers post.lua sends: Anthropic style (`x-api-key`, `anthropic-version`) by default,
    OpenAI style (`authorization: Bearer`) with `auth="bearer"`. No key: no auth header (direct)."""
    if auth == "bearer":
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers
    if auth != "x-api-key":
        raise ValueError(f"unknown auth style {auth!r}")
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    if key:
        headers["x-api-key"] = key
    return headers


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int  # connection errors, timeouts and responses with status >= 400

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


class LoadGenerator(Protocol):
    @property
    def name(self) -> str: ...

    def argv(self, url: str, concurrency: int, duration_s: int) -> list[str]:
        """The command line a reader could run (the in-process generator describes itself)."""
        ...

    def run(
        self,
        url: str,
        body_file: Path,
        key: str | None,
        concurrency: int,
        duration_s: int,
        auth: str = "x-api-key",
    ) -> LoadResult:
        """`auth` says how the key is sent: `x-api-key` (Messages) or `bearer` (Chat Completions)."""
        ...


class Wrk:
    def __init__(self, binary: str, core: int | None) -> None:
        self._binary = binary
        self._core = core
        probe = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
        lines = (probe.stdout or probe.stderr).strip().splitlines()
        self.version = lines[0].split(" Copyright")[0].strip() if lines else "wrk (unknown version)"

    @property
    def name(self) -> str:
        return self.version

    def argv(self, url: str, concurrency: int, duration_s: int) -> list[str]:
        # One thread: the load generator owns a single core, shared with the fake upstream.
        return [
            *pin_prefix(self._core),
            self._binary,
            "-t1",
            f"-c{concurrency}",
            f"-d{duration_s}s",
            "--timeout",
            f"{_REQUEST_TIMEOUT_S}s",
            "-s",
            str(WRK_SCRIPT),
            url,
        ]

    def run(
        self,
        url: str,
        body_file: Path,
        key: str | None,
        concurrency: int,
        duration_s: int,
        auth: str = "x-api-key",
    ) -> LoadResult:
        env = dict(os.environ)
        env.update(BENCH_BODY_FILE=str(body_file), BENCH_API_KEY=key or "", BENCH_AUTH=auth)
        proc = subprocess.run(
            self.argv(url, concurrency, duration_s),
            env=env,
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=False,
        )
        for line in proc.stdout.splitlines():
            if line.startswith("BENCH_RESULT "):
                r = json.loads(line.removeprefix("BENCH_RESULT "))
                errors = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
                return LoadResult(
                    requests=r["requests"],
                    duration_s=r["duration_us"] / 1e6,
                    p50_ms=r["p50_us"] / 1e3,
                    p99_ms=r["p99_us"] / 1e3,
                    mean_ms=r["mean_us"] / 1e3,
                    max_ms=r["max_us"] / 1e3,
                    errors=errors,
                )
        raise RuntimeError(f"wrk gave no result (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def percentile(sorted_values: list[int], pct: float) -> int:
    # Nearest rank, as wrk reports it.
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class AiohttpLoad:
    """The fallback generator, run in this (pinned) process. Slower than wrk, so figures it
    produces understate buzz when the generator, not buzz, runs out of CPU."""

    def __init__(self, reason: str) -> None:
        self.name = f"aiohttp {aiohttp.__version__}, in-process ({reason})"

    def argv(self, url: str, concurrency: int, duration_s: int) -> list[str]:
        return ["<in-process aiohttp>", f"connections={concurrency}", f"duration={duration_s}s", url]

    def run(
        self,
        url: str,
        body_file: Path,
        key: str | None,
        concurrency: int,
        duration_s: int,
        auth: str = "x-api-key",
    ) -> LoadResult:
        headers = request_headers(key, auth)
        return asyncio.run(_aiohttp_load(url, body_file.read_bytes(), headers, concurrency, duration_s))


async def _aiohttp_load(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, duration_s: int
) -> LoadResult:
    latencies_ns: list[int] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        deadline = start + duration_s

        async def connection() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter_ns()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        failed = response.status >= 400
                except (aiohttp.ClientError, TimeoutError):
                    failed = True
                latencies_ns.append(time.perf_counter_ns() - sent)
                errors += failed

        await asyncio.gather(*(connection() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies_ns)
    return LoadResult(
        requests=len(ordered),
        duration_s=elapsed,
        p50_ms=percentile(ordered, 50) / 1e6,
        p99_ms=percentile(ordered, 99) / 1e6,
        mean_ms=sum(ordered) / len(ordered) / 1e6 if ordered else 0.0,
        max_ms=ordered[-1] / 1e6 if ordered else 0.0,
        errors=errors,
    )


def pick(preference: str, core: int | None) -> LoadGenerator:
    """`auto` takes wrk when it is on PATH; `wrk` insists on it; `aiohttp` forces the fallback."""
    binary = shutil.which("wrk")
    if preference == "aiohttp":
        return AiohttpLoad("chosen with --loadgen aiohttp")
    if preference == "auto" and binary is None:
        return AiohttpLoad("fallback: wrk not found")
    if binary is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk), or use --loadgen aiohttp")
    return Wrk(binary, core)
