"""Many open streams at once: 1,000 streams, each an event every 50 ms, straight to the fake
upstream and then through buzz with one and with two workers.

    python bench/streams.py [--streams 1000] [--redis-url redis://127.0.0.1:6379/9]

Each stream is a `/v1/messages` stream of the fake's `ticks` scenario: 100 text deltas and their
framing events, every event written 50 ms after the last (about 5 s a stream). The streams start
spread over one second, from one asyncio client with one connection each, which notes when each
event arrives. Reported, per target:

- the gaps between a stream's consecutive events as the client saw them (p50, p99, worst);
  buzz's added delay is its worst and p99 gap less the direct run's, measured the same way;
- buzz's CPU per relayed event (every worker's user and system time over the run, divided by
  the events the client received);
- buzz's memory per open stream (the workers' summed VmRSS with every stream open, less before).

Nothing is pinned: on a 2-core machine the client and the fake share the cores with buzz. Prints
a table and writes a JSON file (default bench/results/streams-<time>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from procs import (
    LOCALHOST,
    Service,
    buzz_env,
    children,
    cpu_seconds,
    create_key,
    free_port,
    machine,
    rss_kib,
    wait_ready,
    write_results,
)

MODEL = "claude-haiku-4-5"
BODY = json.dumps({"model": MODEL, "max_tokens": 16, "stream": True, "messages": [{"role": "user", "content": "hi"}]})


def _tree(pid: int) -> list[int]:
    """`pid` and its workers."""
    return [pid, *children(pid)]


def _cpu(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def _rss(pid: int) -> int:
    total = 0
    for p in _tree(pid)[1:] or [pid]:  # the workers; the parent alone when there are none
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_kib(p)
    return total


async def _stream(session: aiohttp.ClientSession, url: str, headers: dict[str, str], delay: float) -> list[float]:
    """Arrival time of each event of one stream."""
    await asyncio.sleep(delay)
    times: list[float] = []
    async with session.post(url, data=BODY, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            times.extend([now] * chunk.count(b"\n\n"))
    return times


async def _load(url: str, headers: dict[str, str], streams: int, sample: Any) -> list[list[float]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(_stream(session, url, headers, i / streams)) for i in range(streams)]
        await asyncio.sleep(2.5)  # every stream started a second ago and has four more to run
        sample()
        return list(await asyncio.gather(*tasks))


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))]


def _measure(url: str, headers: dict[str, str], streams: int, service: Service | None) -> dict[str, Any]:
    rss_open: list[int] = []
    rss_before = _rss(service.pid) if service else 0
    cpu_before = _cpu(service.pid) if service else 0.0

    def sample() -> None:
        if service is not None:
            rss_open.append(_rss(service.pid))

    results = asyncio.run(_load(url, headers, streams, sample))
    cpu = (_cpu(service.pid) - cpu_before) if service else 0.0
    gaps = [b - a for times in results for a, b in itertools.pairwise(times[1:])]  # from the first delta on
    events = sum(len(times) for times in results)
    row: dict[str, Any] = {
        "streams": len(results),
        "events": events,
        "gap_p50_ms": round(_percentile(gaps, 50) * 1000, 1),
        "gap_p99_ms": round(_percentile(gaps, 99) * 1000, 1),
        "gap_max_ms": round(max(gaps) * 1000, 1),
    }
    if service is not None:
        row["cpu_s"] = round(cpu, 2)
        row["cpu_us_per_event"] = round(cpu / events * 1e6, 1)
        row["rss_before_mib"] = round(rss_before / 1024, 1)
        row["rss_open_mib"] = round(rss_open[0] / 1024, 1)
        row["rss_kib_per_stream"] = round((rss_open[0] - rss_before) / streams, 1)
    return row


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="buzz-streams-"))
    fake_port = free_port()
    env = buzz_env(work / "data", fake_port, free_port())
    env["BUZZ_REDIS_URL"] = args.redis_url
    fake = Service(
        "fake Anthropic upstream",
        [sys.executable, "-m", "fakes.fake_anthropic", "--port", str(fake_port), "--workers", "2"],
        env,
        work / "fake.log",
    )
    scenario = {"x-fake-scenario": "ticks", "content-type": "application/json", "anthropic-version": "2023-06-01"}
    rows = []
    fake.start()
    try:
        wait_ready(fake, f"http://{LOCALHOST}:{fake_port}/v1/models")
        key = create_key(env)
        row = _measure(f"http://{LOCALHOST}:{fake_port}/v1/messages", scenario, args.streams, None)
        rows.append({"target": "direct", "workers": 0, **row})
        console.print(rows[-1])
        for workers in (1, 2):
            port = free_port()
            argv = [sys.executable, "-m", "buzz", "serve", "--port", str(port), "--workers", str(workers)]
            service = Service(f"buzz x{workers}", argv, env, work / f"buzz-{workers}.log")
            service.start()
            try:
                wait_ready(service, f"http://{LOCALHOST}:{port}/healthz")
                time.sleep(1.0)  # every worker up, not only the first to answer
                headers = {**scenario, "x-api-key": key}
                row = _measure(f"http://{LOCALHOST}:{port}/v1/messages", headers, args.streams, service)
            finally:
                service.stop()
            rows.append({"target": "buzz", "workers": workers, **row})
            console.print(rows[-1])
    finally:
        fake.stop()
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "streams": args.streams,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console()
    result = run(args, console)
    table = Table(title=f"{args.streams} streams, an event every 50 ms")
    columns = ("target", "workers", "events", "gap p50 ms", "gap p99 ms", "gap max ms", "CPU µs/event", "KiB/stream")
    for column in columns:
        table.add_column(column, justify="right")
    for r in result["rows"]:
        table.add_row(
            r["target"],
            str(r["workers"]),
            f"{r['events']:,}",
            str(r["gap_p50_ms"]),
            str(r["gap_p99_ms"]),
            str(r["gap_max_ms"]),
            str(r.get("cpu_us_per_event", "-")),
            str(r.get("rss_kib_per_stream", "-")),
        )
    console.print(table)
    write_results("streams", result, args.out, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
