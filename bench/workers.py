"""How buzz scales with workers, against a bare pass-through run the same way in the same run.

    python bench/workers.py [--seconds 10] [--concurrency 64] [--redis-url redis://127.0.0.1:6379/9]

For the pass-through (bench/passthrough.py: uvicorn and aiohttp, nothing of buzz's) and for
`buzz serve`, each with 1 and then 2 workers on the same supervisor: small `/v1/messages` bodies
at a fixed concurrency from wrk, against the fake Anthropic upstream. Nothing is pinned: on a
2-core machine the load generator and the fake upstream share the cores with the workers, which
is why a bare pass-through gains far less than 2x from a second worker; buzz is held to that
same ceiling, its ratio against the pass-through's own. buzz runs its default configuration
with Redis (`--workers 2` needs it), for one worker too, so that only the count differs.

Reports req/s, p50 and p99, and CPU per request (every worker's user and system time over the
timed run, divided by the requests answered). Prints a table and writes a JSON file (default
bench/results/workers-<time>.json). docs/performance.md has the figures of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import loadgen
from procs import (
    LOCALHOST,
    Service,
    buzz_env,
    children,
    cpu_seconds,
    create_key,
    free_port,
    machine,
    wait_ready,
    write_results,
)

BENCH_DIR = Path(__file__).resolve().parent
SMALL = 1024


def _cpu(service: Service) -> float:
    """The service's CPU seconds, its workers' included (reaped children are not counted, and
    none is reaped while it runs)."""
    total = 0.0
    for pid in (service.pid, *children(service.pid)):
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def _measure(
    load: loadgen.LoadGenerator, service: Service, url: str, body: Path, key: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    load.run(url, body, key, args.concurrency, 2)  # warm: connections, caches, the JIT-less interpreter's dicts
    before = _cpu(service)
    result = load.run(url, body, key, args.concurrency, args.seconds)
    cpu = _cpu(service) - before
    return {
        "rps": round(result.rps),
        "p50_ms": round(result.p50_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "errors": result.errors,
        "requests": result.requests,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / result.requests * 1e6, 1) if result.requests else None,
    }


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    load = loadgen.pick("auto", None)
    work = Path(tempfile.mkdtemp(prefix="buzz-workers-"))
    body = work / "small.json"
    body.write_bytes(loadgen.message_body(SMALL))
    fake_port = free_port()
    env = buzz_env(work / "data", fake_port, free_port())
    env["BUZZ_REDIS_URL"] = args.redis_url
    fake = Service(
        "fake Anthropic upstream",
        [sys.executable, "-m", "fakes.fake_anthropic", "--port", str(fake_port), "--workers", "2"],
        env,
        work / "fake.log",
    )
    rows: list[dict[str, Any]] = []
    fake.start()
    try:
        wait_ready(fake, f"http://{LOCALHOST}:{fake_port}/v1/models")
        key = create_key(env)
        for target in ("pass-through", "buzz"):
            for workers in (1, 2):
                port = free_port()
                if target == "buzz":
                    argv = [sys.executable, "-m", "buzz", "serve", "--port", str(port), "--workers", str(workers)]
                    ready, sent_key = f"http://{LOCALHOST}:{port}/healthz", key
                else:
                    script = str(BENCH_DIR / "passthrough.py")
                    upstream = f"http://{LOCALHOST}:{fake_port}"
                    argv = [sys.executable, script, "--port", str(port), "--upstream", upstream]
                    argv += ["--workers", str(workers)]
                    ready, sent_key = f"http://{LOCALHOST}:{port}/v1/models", None  # relayed to the fake
                service = Service(f"{target} x{workers}", argv, env, work / f"{target}-{workers}.log")
                service.start()
                try:
                    wait_ready(service, ready)
                    time.sleep(1.0)  # every worker up, not only the first to answer /healthz
                    url = f"http://{LOCALHOST}:{port}/v1/messages"
                    row = {"target": target, "workers": workers, **_measure(load, service, url, body, sent_key, args)}
                finally:
                    service.stop()
                rows.append(row)
                console.print(
                    f"{target:>12} x{workers}: {row['rps']:>6,} req/s  p50 {row['p50_ms']:.3f} ms  "
                    f"p99 {row['p99_ms']:.3f} ms  errors {row['errors']}  CPU {row['cpu_us_per_request']} µs/request"
                )
    finally:
        fake.stop()
    by = {(r["target"], r["workers"]): r for r in rows}
    floor_ratio = by[("pass-through", 2)]["rps"] / by[("pass-through", 1)]["rps"]
    buzz_ratio = by[("buzz", 2)]["rps"] / by[("buzz", 1)]["rps"]
    cpu_growth = by[("buzz", 2)]["cpu_us_per_request"] / by[("buzz", 1)]["cpu_us_per_request"]
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_generator": load.name,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rows": rows,
        "pass_through_ratio": round(floor_ratio, 3),
        "buzz_ratio": round(buzz_ratio, 3),
        "buzz_share_of_pass_through_ratio": round(buzz_ratio / floor_ratio, 3),
        "buzz_cpu_per_request_2_over_1": round(cpu_growth, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console()
    result = run(args, console)
    table = Table(title=f"workers at c={args.concurrency} ({result['load_generator']})")
    for column in ("target", "workers", "req/s", "p50 ms", "p99 ms", "errors", "CPU µs/request"):
        table.add_column(column, justify="right")
    for r in result["rows"]:
        cells = (r["rps"], r["p50_ms"], r["p99_ms"], r["errors"], r["cpu_us_per_request"])
        table.add_row(r["target"], str(r["workers"]), *(f"{c:,}" if isinstance(c, int) else str(c) for c in cells))
    console.print(table)
    console.print(
        f"2 workers over 1: pass-through {result['pass_through_ratio']}x, buzz {result['buzz_ratio']}x "
        f"({result['buzz_share_of_pass_through_ratio']} of the pass-through's ratio; target >= 0.9); "
        f"buzz CPU per request, 2 workers over 1: {result['buzz_cpu_per_request_2_over_1']}x"
    )
    write_results("workers", result, args.out, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
