"""What metrics and their scrapes cost the request path.

    python bench/metrics.py [--rounds 3] [--seconds 10] [--concurrency 32] [--instructions]

Four buzz processes on one core, side by side for the whole run, one for each point, each with
its own data directory (so every ledger grows alike). The fake Anthropic upstream, wrk and this
script (which is also the scraper) share the other core. Each round measures every point once,
small `/v1/messages` bodies at a fixed concurrency, starting one point further each round, so
no point always comes first:

- `off`: a buzz without metrics;
- `on`: a buzz with metrics (`--metrics-port`), nobody scraping (the ledger's observer and the
  1 s sampler);
- `on, scrape 1/s` and `on, scrape 10/s`: the same, with `GET /metrics` every second, or ten
  times a second, for the whole timed run.

Reports req/s, p50, p99, buzz's CPU per request (user and system time of every thread, the
metrics server's included, over the timed run), and the scrapes made, their median time and
size. Prints a table and writes a JSON file (default bench/results/metrics-<time>.json).
docs/performance.md has the figures of a run.

`--instructions` also counts instructions under callgrind, as `bench/instructions.py` does (a
figure the machine's load does not move): per small `/v1/messages` request with metrics off and
on, and per scrape, from a run with the port scraped ten times a second while the requests are
sent (the scrape runs in the process measured, so its instructions are in that run's total).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import instructions
import loadgen
from procs import (
    LOCALHOST,
    Service,
    buzz_env,
    core_usage,
    cpu_jiffies,
    cpu_seconds,
    create_key,
    free_port,
    machine,
    pin_prefix,
    wait_ready,
    write_results,
)

SMALL = 1024
# Percent of buzz's core spent on something other than buzz, past which a point is left out of
# the medians (it is still in the JSON file, marked).
_DISTURBED_PCT = 10.0
# (name, scrapes a second): None is the buzz without metrics.
POINTS: tuple[tuple[str, float | None], ...] = (
    ("off", None),
    ("on", 0.0),
    ("on, scrape 1/s", 1.0),
    ("on, scrape 10/s", 10.0),
)


class Scraper(threading.Thread):
    """GET /metrics every `1 / rate` seconds until stopped; keeps each scrape's time and size."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(name="scraper", daemon=True)
        self.url, self.period = url, 1.0 / rate
        self.stopping = threading.Event()
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.failures = 0

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:  # noqa: S310 - a local http URL
                    self.sizes.append(len(response.read()))
                self.times.append(time.perf_counter() - started)
            except OSError:
                self.failures += 1
            next_at += self.period
            self.stopping.wait(max(0.0, next_at - time.monotonic()))


def _measure(
    load: loadgen.LoadGenerator,
    buzz: Service,
    port: int,
    metrics_port: int | None,
    rate: float | None,
    body: Path,
    key: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    url = f"http://{LOCALHOST}:{port}/v1/messages"
    load.run(url, body, key, args.concurrency, 2)  # warm: connections, caches
    scraper = None
    if rate and metrics_port is not None:
        scraper = Scraper(f"http://{LOCALHOST}:{metrics_port}/metrics", rate)
        scraper.start()
    before, cores_before, wall_before = cpu_seconds(buzz.pid), cpu_jiffies(), time.monotonic()
    result = load.run(url, body, key, args.concurrency, args.seconds)
    cpu, cores_after, wall = cpu_seconds(buzz.pid) - before, cpu_jiffies(), time.monotonic() - wall_before
    row: dict[str, Any] = {
        "rps": round(result.rps),
        "p50_ms": round(result.p50_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "errors": result.errors,
        "requests": result.requests,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / result.requests * 1e6, 1) if result.requests else None,
        "buzz_cpu_pct": round(100 * cpu / wall, 1),
    }
    if args.buzz_core in cores_after:
        # Buzz's core busier than buzz: something else ran there, and the point is disturbed.
        row["buzz_core_busy_pct"], row["buzz_core_steal_pct"] = core_usage(cores_before, cores_after, args.buzz_core)
    if scraper is not None:
        scraper.stopping.set()
        scraper.join(15)
        row["scrapes"] = len(scraper.times)
        row["scrape_failures"] = scraper.failures
        row["scrape_p50_ms"] = round(statistics.median(scraper.times) * 1000, 2) if scraper.times else None
        row["scrape_bytes"] = scraper.sizes[-1] if scraper.sizes else None
    return row


def count_instructions(requests: int, buzz_core: int | None, load_core: int | None, console: Console) -> dict[str, Any]:
    """Instructions per request with metrics off and on, and per scrape of the metrics port."""
    work = Path(tempfile.mkdtemp(prefix="buzz-metrics-instructions-"))
    fake_port = free_port()
    fake_argv = [*pin_prefix(load_core), sys.executable, "-m", "fakes.fake_anthropic", "--port", str(fake_port)]
    fake = Service("fake Anthropic upstream", fake_argv, buzz_env(work / "fake", fake_port, 1), work / "fake.log")
    fake.start()
    out: dict[str, Any] = {"requests": requests}
    try:
        wait_ready(fake, f"http://{LOCALHOST}:{fake_port}/v1/models")
        env = buzz_env(work / "data", fake_port, free_port())
        key = create_key(env)
        workload = instructions.Workload("/v1/messages", "/v1/messages", "x-api-key", "messages", "plain")
        scrapes: list[int] = []
        for name in ("off", "on", "on, scraped"):
            port, metrics_port = free_port(), free_port()
            argv = [sys.executable, "-m", "buzz", "serve", "--host", LOCALHOST, "--port", str(port)]
            if name != "off":
                argv += ["--metrics-port", str(metrics_port)]

            @contextlib.contextmanager
            def scraping(scraped: bool = name == "on, scraped", metrics_port: int = metrics_port) -> Iterator[None]:
                if not scraped:
                    yield
                    return
                scraper = Scraper(f"http://{LOCALHOST}:{metrics_port}/metrics", 10.0)
                scraper.start()
                try:
                    yield
                finally:
                    scraper.stopping.set()
                    scraper.join(30)
                    scrapes.append(len(scraper.times))

            request = instructions._request(port, workload, key)
            per_request = instructions.measure(argv, buzz_core, env, port, request, requests, work, scraping)
            out[name] = per_request
            console.print(f"instructions, metrics {name}: {per_request:,} a request")
        out["scrapes"] = scrapes[0]
        out["per_scrape"] = round((out["on, scraped"] - out["on"]) * requests / max(1, scrapes[0]))
        console.print(f"instructions per scrape: {out['per_scrape']:,} ({scrapes[0]} scrapes)")
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    usable = os.sched_getaffinity(0)
    pinned = {args.buzz_core, args.load_core} <= usable and args.buzz_core != args.load_core
    buzz_core, load_core = (args.buzz_core, args.load_core) if pinned else (None, None)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})  # this script is the scraper
    load = loadgen.pick("auto", load_core)
    work = Path(tempfile.mkdtemp(prefix="buzz-metrics-bench-"))
    body = work / "small.json"
    body.write_bytes(loadgen.message_body(SMALL))
    fake_port = free_port()
    fake_argv = [*pin_prefix(load_core), sys.executable, "-m", "fakes.fake_anthropic", "--port", str(fake_port)]
    fake = Service(
        "fake Anthropic upstream",
        [*fake_argv, "--workers", "2"],
        buzz_env(work / "fake-data", fake_port, free_port()),
        work / "fake.log",
    )
    services: list[Service] = [fake]
    gateways: dict[str, tuple[Service, int, int | None, str]] = {}
    rows: list[dict[str, Any]] = []
    try:
        fake.start()
        wait_ready(fake, f"http://{LOCALHOST}:{fake_port}/v1/models")
        for number, (name, rate) in enumerate(POINTS):
            env = buzz_env(work / f"data-{number}", fake_port, free_port())
            key = create_key(env)
            port = free_port()
            argv = [*pin_prefix(buzz_core), sys.executable, "-m", "buzz", "serve", "--port", str(port)]
            metrics_port = None if rate is None else free_port()
            if metrics_port is not None:
                argv += ["--metrics-port", str(metrics_port)]
            service = Service(f"buzz ({name})", argv, env, work / f"buzz-{number}.log")
            services.append(service)
            service.start()
            wait_ready(service, f"http://{LOCALHOST}:{port}/healthz")
            gateways[name] = (service, port, metrics_port, key)
        for round_number in range(1, args.rounds + 1):
            first = (round_number - 1) % len(POINTS)
            for point, rate in POINTS[first:] + POINTS[:first]:
                service, port, metrics_port, key = gateways[point]
                row = {
                    "round": round_number,
                    "point": point,
                    **_measure(load, service, port, metrics_port, rate, body, key, args),
                }
                rows.append(row)
                scrapes = (
                    f"  {row['scrapes']} scrapes, p50 {row['scrape_p50_ms']} ms, {row['scrape_bytes']:,} bytes"
                    if "scrapes" in row
                    else ""
                )
                console.print(
                    f"round {round_number} {point:>16}: {row['rps']:>6,} req/s  p50 {row['p50_ms']:.3f} ms  "
                    f"p99 {row['p99_ms']:.3f} ms  errors {row['errors']}  CPU {row['cpu_us_per_request']} µs/request"
                    f"  buzz {row['buzz_cpu_pct']:.0f}% of core {args.buzz_core}, busy {row.get('buzz_core_busy_pct')}%"
                    + scrapes
                )
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        other = row.get("buzz_core_busy_pct", row["buzz_cpu_pct"]) - row["buzz_cpu_pct"]
        row["disturbed"] = other > _DISTURBED_PCT
    summary = {}
    for point, _ in POINTS:
        mine = [r for r in rows if r["point"] == point and not r["disturbed"]]
        if not mine:
            continue
        summary[point] = {
            "points": len(mine),
            "rps_median": round(statistics.median(r["rps"] for r in mine)),
            "cpu_us_per_request_median": round(statistics.median(r["cpu_us_per_request"] for r in mine), 1),
        }
    return {
        "started_at": args.started_at,
        "machine": machine(),
        "loadavg_at_end": os.getloadavg(),
        "load_generator": load.name,
        "pinning": f"buzz on core {buzz_core}, load on core {load_core}" if pinned else "not pinned",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rows": rows,
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--buzz-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--instructions", action="store_true", help="also count instructions under callgrind")
    parser.add_argument("--requests", type=int, default=1000, help="requests counted under callgrind")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    console = Console()
    result = run(args, console)
    if args.instructions:
        result["instructions"] = count_instructions(args.requests, args.buzz_core, args.load_core, console)
    table = Table(title=f"metrics at c={args.concurrency} ({result['load_generator']}; {result['pinning']})")
    for column in ("point", "undisturbed runs", "req/s (median)", "CPU µs/request (median)"):
        table.add_column(column, justify="right")
    for point, figures in result["summary"].items():
        table.add_row(
            point, str(figures["points"]), f"{figures['rps_median']:,}", str(figures["cpu_us_per_request_median"])
        )
    console.print(table)
    write_results("metrics", result, args.out, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
