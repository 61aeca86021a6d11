"""Benchmark buzz against the fake Anthropic and OpenAI upstreams: direct (client -> fake) versus
through buzz (client -> buzz -> fake), in one run.

    python bench/run.py [--quick] [--out bench/results/NAME.json]

Buzz runs with its default configuration, everything on: key check on every request, a meter
on every response, a ledger row per request in SQLite. It is pinned to one core; the fake
upstreams, the load generator and this script share the other. The small body is also sent with
limits on: a key with every limit set, in a prepaid project with its own limits, through the
in-process limiter (same buzz) and then through the Redis one (a second buzz, alone on the same
core, with BUZZ_REDIS_URL). Figures, targets and the exact commands go to the terminal and to a
JSON file. docs/performance.md explains the method.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape

import limits
import report
import ttfb
from loadgen import LoadGenerator, LoadResult, chat_body, message_body, percentile, pick, request_headers
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
    rss_kib,
    wait_ready,
)

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Workload:
    api: str  # which fake upstream answers it: "messages" (Anthropic) or "chat" (OpenAI)
    path: str
    auth: str  # how the buzz key is sent: "x-api-key" or "bearer" (post.lua's BENCH_AUTH)
    body_bytes: int


# Keyed by the name the rows, the targets and the JSON file use ("body").
WORKLOADS = {
    "small": Workload("messages", "/v1/messages", "x-api-key", 1024),
    "chat": Workload("chat", "/v1/chat/completions", "bearer", 1024),
    "large": Workload("messages", "/v1/messages", "x-api-key", 200 * 1024),
}
# Measured in this order: the two ~1 KB workloads back to back.
CONCURRENCY = {"small": (1, 16, 32, 64), "chat": (1, 32), "large": (1, 16, 64)}
# Small body with limits on: in-process right after direct and buzz at the same point, Redis
# after the main buzz has stopped, each point again right after a direct one.
LIMITS_CONCURRENCY = (1, 32)
LIMITS_MEMORY, LIMITS_REDIS = "buzz-limits-memory", "buzz-limits-redis"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MEMORY_CONCURRENCY = 32
MEMORY_MAX_SLICES = 100


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    duration_s: int  # each throughput measurement
    warmup_s: int  # discarded run before each measurement
    memory_requests: int  # at least this many, in slices with an RSS sample after each
    memory_slice_s: int
    ttfb_samples: int
    slow_samples: int  # streams with 100 ms between events, about 1 s each


FULL = Mode("full", 10, 2, 100_000, 3, 300, 10)
QUICK = Mode("quick", 3, 1, 20_000, 1, 100, 3)


@dataclass(frozen=True, slots=True)
class Gateway:
    """One way through buzz: a buzz process and the key sent to it."""

    port: int
    pid: int
    key: str


@dataclass
class Bench:
    gen: LoadGenerator
    fake_ports: dict[str, int]  # by Workload.api
    gateways: dict[str, Gateway]  # by target: "buzz", LIMITS_MEMORY, LIMITS_REDIS
    body_files: dict[str, Path]
    buzz_core: int | None
    load_core: int | None
    phase: str = "main"  # "main", then "redis" (the second buzz)
    watch_pid: int | None = None  # redis-server, while the Redis limiter is measured
    # Counted by the clients, by target, to compare with the ledgers; client_errors likewise.
    responses: Counter[str] = field(default_factory=Counter)
    client_errors: Counter[str] = field(default_factory=Counter)
    # By target with limits: how many x-buzz-ratelimit-* headers a response carries, and their bytes.
    ratelimit_headers: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def buzz_pid(self) -> int:
        """The buzz process of the current phase (its CPU is measured on every row, direct too)."""
        return self.gateways[LIMITS_REDIS if self.phase == "redis" else "buzz"].pid

    def url(self, target: str, body: str = "small") -> str:
        workload = WORKLOADS[body]
        port = self.gateways[target].port if target in self.gateways else self.fake_ports[workload.api]
        return f"http://{LOCALHOST}:{port}{workload.path}"

    def load(self, target: str, body: str, concurrency: int, duration_s: int) -> LoadResult:
        key = self.gateways[target].key if target in self.gateways else None
        url, auth = self.url(target, body), WORKLOADS[body].auth
        result = self.gen.run(url, self.body_files[body], key, concurrency, duration_s, auth)
        self.responses[target] += result.requests
        self.client_errors[target] += result.errors
        return result


# What each API answers to a non-streaming request: a run of 401s or 404s would make fast, false figures.
_ANSWER = {"messages": ("type", "message"), "chat": ("object", "chat.completion")}


def check_answer(bench: Bench, target: str, body: str) -> None:
    """One request before measuring; a key with limits must come back with its headroom headers,
    or the limiter was not in the path."""
    workload = WORKLOADS[body]
    gateway = bench.gateways.get(target)
    headers = request_headers(gateway.key if gateway else None, workload.auth)
    request = urllib.request.Request(  # noqa: S310 - a local http URL
        bench.url(target, body), data=bench.body_files[body].read_bytes(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        answer = json.loads(response.read())
        missing = [name for name in limits.LIMITED_HEADERS if response.headers.get(name) is None]
        extra = [(k, v) for k, v in response.headers.items() if k.lower().startswith("x-buzz-ratelimit-")]
    name, expected = _ANSWER[workload.api]
    if answer.get(name) != expected:
        raise RuntimeError(f"{target} {workload.path} answered something other than a {expected}: {answer!r:.200}")
    if target in (LIMITS_MEMORY, LIMITS_REDIS):
        if missing:
            raise RuntimeError(f"{target}: no {', '.join(missing)} header, so the limiter was not in the path")
        size = sum(len(k) + len(v) + 4 for k, v in extra)  # "name: value\r\n"
        bench.ratelimit_headers[target] = {"count": len(extra), "bytes": size}
    bench.responses[target] += 1


def check_answers(bench: Bench) -> None:
    """One request each way and each API before measuring."""
    for body in ("small", "chat"):
        for target in ("direct", "buzz"):
            check_answer(bench, target, body)
    check_answer(bench, LIMITS_MEMORY, "small")


def _pinning(buzz_core: int, load_core: int) -> tuple[int | None, int | None, str]:
    usable = os.sched_getaffinity(0)
    if buzz_core != load_core and {buzz_core, load_core} <= usable:
        return buzz_core, load_core, f"buzz on core {buzz_core}; fake upstreams and load on core {load_core}"
    return (
        None,
        None,
        f"NOT pinned: cores {buzz_core} and {load_core} are not both usable here ({sorted(usable)})",
    )


def _ms(ns: int) -> float:
    return round(ns / 1e6, 4)


def _load_row(bench: Bench, target: str, body: str, concurrency: int, mode: Mode) -> dict[str, Any]:
    bench.load(target, body, concurrency, mode.warmup_s)
    watch = bench.watch_pid
    with contextlib.ExitStack() as stack:
        # The sampler only where redis-server is busy: it shares the load core with wrk and the fakes.
        sampling = watch is not None and target == LIMITS_REDIS
        sampler = stack.enter_context(limits.CoreSampler(watch)) if sampling and watch is not None else None
        watch_before = cpu_seconds(watch) if watch is not None else 0.0
        cpu_before, wall_before, cores_before = cpu_seconds(bench.buzz_pid), time.monotonic(), cpu_jiffies()
        result = bench.load(target, body, concurrency, mode.duration_s)
        wall, cores_after = time.monotonic() - wall_before, cpu_jiffies()
        watch_after = cpu_seconds(watch) if watch is not None else 0.0
    workload = WORKLOADS[body]
    row: dict[str, Any] = {
        "phase": bench.phase,
        "target": target,
        "limits": {LIMITS_MEMORY: "memory", LIMITS_REDIS: "redis"}.get(target),
        "body": body,
        "api": workload.api,
        "path": workload.path,
        "body_bytes": workload.body_bytes,
        "concurrency": concurrency,
    }
    row.update(asdict(result), rps=round(result.rps, 1))
    # Buzz near 100% of its core means buzz is the limit; the load core near 100% means the test rig is.
    row["buzz_cpu_pct"] = round(100 * (cpu_seconds(bench.buzz_pid) - cpu_before) / wall, 1)
    if bench.buzz_core is not None and bench.load_core is not None:
        row["buzz_core_busy_pct"], row["buzz_core_steal_pct"] = core_usage(cores_before, cores_after, bench.buzz_core)
        row["load_core_busy_pct"], row["load_core_steal_pct"] = core_usage(cores_before, cores_after, bench.load_core)
    if watch is not None:
        # redis-server's CPU over the same window, and on which cores its threads were seen running.
        row["redis_cpu_pct"] = round(100 * (watch_after - watch_before) / wall, 1)
    if sampler is not None:
        row["redis_running_samples_by_core"] = {str(core): n for core, n in sorted(sampler.running.items())}
        row["redis_samples"] = sampler.samples
    return row


def throughput(
    bench: Bench, mode: Mode, console: Console, plan: Sequence[tuple[str, int, tuple[str, ...]]]
) -> list[dict[str, Any]]:
    rows = []
    for body, concurrency, targets in plan:
        # Direct and buzz back to back, so a drift of the machine touches both alike.
        for target in targets:
            row = _load_row(bench, target, body, concurrency, mode)
            redis_cpu = f"  redis-server {row['redis_cpu_pct']:.0f}%" if "redis_cpu_pct" in row else ""
            console.print(
                f"  {target:>18} {body} c={concurrency:<3} {row['rps']:>9,.0f} req/s"
                f"  p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  errors {row['errors']}"
                f"  buzz CPU {row['buzz_cpu_pct']:.0f}%{redis_cpu}"
            )
            rows.append(row)
    return rows


def main_plan() -> list[tuple[str, int, tuple[str, ...]]]:
    plan = []
    for body, levels in CONCURRENCY.items():
        for concurrency in levels:
            limited = body == "small" and concurrency in LIMITS_CONCURRENCY
            plan.append((body, concurrency, ("direct", "buzz", *((LIMITS_MEMORY,) if limited else ()))))
    return plan


def memory(bench: Bench, mode: Mode, console: Console) -> dict[str, Any]:
    # Fixed-length slices rather than fixed counts: wrk cannot stop early on a count, it always
    # runs its whole -d. The slice cap bounds the phase if buzz turned out very slow.
    bench.load("buzz", "small", MEMORY_CONCURRENCY, mode.warmup_s)
    samples = [{"requests": 0, "rss_kib": rss_kib(bench.buzz_pid)}]
    sent, errors = 0, 0
    for _ in range(MEMORY_MAX_SLICES):
        if sent >= mode.memory_requests:
            break
        result = bench.load("buzz", "small", MEMORY_CONCURRENCY, mode.memory_slice_s)
        sent += result.requests
        errors += result.errors
        samples.append({"requests": sent, "rss_kib": rss_kib(bench.buzz_pid)})
        console.print(f"  {sent:>7,} requests  RSS {samples[-1]['rss_kib'] / 1024:.1f} MiB")
    start, mid, end = samples[0], samples[len(samples) // 2], samples[-1]
    return {
        "concurrency": MEMORY_CONCURRENCY,
        "requests": sent,
        "errors": errors,
        "samples": samples,
        "start_kib": start["rss_kib"],
        "mid_kib": mid["rss_kib"],
        "end_kib": end["rss_kib"],
        "growth_kib": end["rss_kib"] - start["rss_kib"],
        "growth_bytes_per_request": round((end["rss_kib"] - start["rss_kib"]) * 1024 / max(1, sent), 2),
    }


def _timing_stats(timings: list[ttfb.StreamTiming]) -> dict[str, Any]:
    first = sorted(t.ttfb_ns for t in timings)
    total = sorted(t.total_ns for t in timings)
    return {
        "samples": len(timings),
        "ttfb_p50_ms": _ms(percentile(first, 50)),
        "ttfb_p99_ms": _ms(percentile(first, 99)),
        "total_p50_ms": _ms(percentile(total, 50)),
    }


def first_byte(bench: Bench, mode: Mode) -> dict[str, Any]:
    body = message_body(WORKLOADS["small"].body_bytes, stream=True)
    out: dict[str, Any] = {"body_bytes": len(body)}
    for scenario, samples, warmup in ((None, mode.ttfb_samples, 20), ("slow", mode.slow_samples, 1)):
        section: dict[str, Any] = {}
        buzz = bench.gateways["buzz"]
        for target, port in (("direct", bench.fake_ports["messages"]), ("buzz", buzz.port)):
            request = ttfb.build_request(port, body, buzz.key if target == "buzz" else None, scenario)
            section[target] = _timing_stats(ttfb.measure(port, request, samples, warmup))
            if target == "buzz":
                bench.responses["buzz"] += samples + warmup
        for stat in ("ttfb_p50_ms", "ttfb_p99_ms"):
            section[f"added_{stat}"] = round(section["buzz"][stat] - section["direct"][stat], 4)
        out["slow" if scenario else "fast"] = section
    return out


def ledger_counts(database: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return {str(status): n for status, n in db.execute("SELECT status, count(*) FROM ledger GROUP BY status")}


def _git_revision() -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    return revision + (" (with uncommitted changes)" if git("status", "--porcelain", "--", "src") else "")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so a SIGTERM runs the same cleanup as Ctrl-C


def _start_buzz(
    name: str, core: int | None, port: int, env: dict[str, str], log: Path, stack: contextlib.ExitStack
) -> tuple[Service, list[str]]:
    argv = [*pin_prefix(core), sys.executable, "-m", "buzz", "serve", "--host", LOCALHOST, "--port", str(port)]
    service = Service(name, argv, env, log)
    stack.callback(service.stop)
    service.start()
    return service, argv


def redis_phase(
    bench: Bench,
    mode: Mode,
    console: Console,
    redis_url: str,
    env: dict[str, str],
    work: Path,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    """A second buzz on the same core, alone (the first has stopped), sharing its limits through
    Redis; the small body at each LIMITS_CONCURRENCY right after a direct run. Redis is not
    restarted or pinned: it runs where it runs, and each row says how much CPU it took and where."""
    data_dir = work / "data-redis"
    data_dir.mkdir()
    redis_env = env | {"BUZZ_DATA_DIR": str(data_dir), "BUZZ_REDIS_URL": redis_url}
    # Redis outlives the run and may be shared: a project name of its own, and its keys removed after.
    limited = limits.create_limited_key(redis_env, f"bench-limits-{uuid.uuid4().hex[:8]}")
    stack.callback(limits.forget_redis_state, redis_url, limited)
    server = limits.redis_server(redis_url)
    port = free_port()
    buzz, argv = _start_buzz("buzz (Redis limiter)", bench.buzz_core, port, redis_env, work / "buzz-redis.log", stack)
    wait_ready(buzz, f"http://{LOCALHOST}:{port}/healthz")
    bench.gateways[LIMITS_REDIS] = Gateway(port, buzz.pid, limited.key)
    bench.phase, bench.watch_pid = "redis", server["pid"]
    check_answer(bench, LIMITS_REDIS, "small")
    where = f"pid {server['pid']}, cores {server['allowed_cores']}" if server["pid"] else "not on this machine"
    console.print(f"limits through Redis {server['version']} ({where}): a second buzz on the same core")
    plan = [("small", concurrency, ("direct", LIMITS_REDIS)) for concurrency in LIMITS_CONCURRENCY]
    rows = throughput(bench, mode, console, plan)
    buzz.stop()  # graceful: ledger flushed, every reservation settled
    bench.phase, bench.watch_pid = "main", None
    check = limits.verify(redis_env, data_dir / "buzz.sqlite3", limited, bench.client_errors[LIMITS_REDIS])
    check["client_responses"] = bench.responses[LIMITS_REDIS]
    check["ratelimit_headers"] = bench.ratelimit_headers[LIMITS_REDIS]
    return {
        "rows": rows,
        "check": check,
        "server": server,
        "buzz": shlex.join(argv) + "  # env as above, plus BUZZ_REDIS_URL=" + redis_url,
    }


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    mode = QUICK if args.quick else FULL
    buzz_core, load_core, pinning = _pinning(args.buzz_core, args.load_core)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})  # this script is the TTFB client and the fallback generator
    gen = pick(args.loadgen, load_core)
    revision = _git_revision()  # before buzz starts: the code it loads is the code measured
    host = machine()  # its load average says whether something else was running when we began
    redis_url: str | None = None if args.no_redis else args.redis_url
    redis_skipped = "--no-redis" if args.no_redis else limits.redis_unreachable(args.redis_url)
    if redis_skipped is not None:
        redis_url = None
        console.print(f"[yellow]no Redis limiter measurement: {escape(redis_skipped)}[/]")
    console.print(f"[bold]buzz benchmark[/] ({mode.name}); load generator: {escape(gen.name)}; {pinning}")
    with tempfile.TemporaryDirectory(prefix="buzz-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        body_files = {}
        for name, workload in WORKLOADS.items():
            body_files[name] = work / f"{name}.json"
            make_body = chat_body if workload.api == "chat" else message_body
            body_files[name].write_bytes(make_body(workload.body_bytes))
        fake_port, fake_openai_port, buzz_port = free_port(), free_port(), free_port()
        data_dir = work / "data"
        data_dir.mkdir()
        database = data_dir / "buzz.sqlite3"
        env = buzz_env(data_dir, fake_port, fake_openai_port)
        key = create_key(env)
        limited = limits.create_limited_key(env, "bench-limits")

        fake_argv = [*pin_prefix(load_core), sys.executable, "-m", "fakes.fake_anthropic"]
        fake_argv += ["--port", str(fake_port), "--workers", str(args.fake_workers)]
        fake = Service("fake Anthropic upstream", fake_argv, env, work / "fake.log")
        stack.callback(fake.stop)
        fake.start()
        fake_openai_argv = [*pin_prefix(load_core), sys.executable, "-m", "fakes.fake_openai"]
        fake_openai_argv += ["--port", str(fake_openai_port), "--workers", str(args.fake_workers)]
        fake_openai = Service("fake OpenAI upstream", fake_openai_argv, env, work / "fake-openai.log")
        stack.callback(fake_openai.stop)
        fake_openai.start()
        buzz, buzz_argv = _start_buzz("buzz", buzz_core, buzz_port, env, work / "buzz.log", stack)
        wait_ready(fake, f"http://{LOCALHOST}:{fake_port}/v1/models")
        wait_ready(fake_openai, f"http://{LOCALHOST}:{fake_openai_port}/v1/models")
        wait_ready(buzz, f"http://{LOCALHOST}:{buzz_port}/healthz")

        fake_ports = {"messages": fake_port, "chat": fake_openai_port}
        gateways = {"buzz": Gateway(buzz_port, buzz.pid, key), LIMITS_MEMORY: Gateway(buzz_port, buzz.pid, limited.key)}
        bench = Bench(gen, fake_ports, gateways, body_files, buzz_core, load_core)
        check_answers(bench)
        idle_rss = rss_kib(buzz.pid)
        console.print(f"memory: {mode.memory_requests:,} small requests through buzz at c={MEMORY_CONCURRENCY}")
        mem = memory(bench, mode, console)
        mem["idle_after_start_kib"] = idle_rss
        console.print(
            f"throughput: {mode.duration_s} s per measurement after {mode.warmup_s} s of warmup"
            f" ({LIMITS_MEMORY}: the small body with the in-process limiter)"
        )
        rows = throughput(bench, mode, console, main_plan())
        console.print(f"time to first byte: {mode.ttfb_samples} streams, then {mode.slow_samples} slow ones")
        first = first_byte(bench, mode)
        buzz.stop()  # graceful: the ledger writer flushes every row before the count below
        ledger = ledger_counts(database)
        limits_out: dict[str, Any] = {
            "memory": limits.verify(env, database, limited, bench.client_errors[LIMITS_MEMORY])
            | {
                "client_responses": bench.responses[LIMITS_MEMORY],
                "ratelimit_headers": bench.ratelimit_headers[LIMITS_MEMORY],
            }
        }
        if redis_url is not None:
            redis = redis_phase(bench, mode, console, redis_url, env, work, stack)
            rows += redis.pop("rows")
            limits_out["redis"] = redis.pop("check") | redis
        else:
            limits_out["redis"] = {"skipped": redis_skipped}

    key_hidden = "<key from `buzz keys create`>"
    main_responses = sum(n for target, n in bench.responses.items() if target != LIMITS_REDIS and target != "direct")
    return {
        "started_at": args.started_at,
        "mode": asdict(mode),
        "machine": host,
        "loadavg_at_end": os.getloadavg(),
        "buzz_revision": revision,
        "load_generator": gen.name,
        "pinning": pinning,
        "fake_workers": args.fake_workers,
        "commands": {
            "env": "BUZZ_DATA_DIR=<temp dir> ANTHROPIC_API_KEY=bench-not-a-real-key "
            "BUZZ_ANTHROPIC_BASE_URL=http://127.0.0.1:<fake port> OPENAI_API_KEY=bench-not-a-real-key "
            "BUZZ_OPENAI_BASE_URL=http://127.0.0.1:<fake OpenAI port>/v1",
            "key": f"{shlex.quote(sys.executable)} -m buzz keys create --project bench",
            "limits_key": list(limited.commands),
            "fake": shlex.join(fake_argv),
            "fake_openai": shlex.join(fake_openai_argv),
            "buzz": shlex.join(buzz_argv),
            "load": shlex.join(gen.argv(bench.url("buzz"), 32, mode.duration_s))
            + f"  # env BENCH_BODY_FILE=<body> BENCH_API_KEY={key_hidden}",
            "load_chat": shlex.join(gen.argv(bench.url("buzz", "chat"), 32, mode.duration_s))
            + f"  # env BENCH_BODY_FILE=<chat body> BENCH_API_KEY={key_hidden} BENCH_AUTH=bearer",
        },
        "throughput": rows,
        "memory": mem,
        "ttfb": first,
        "ledger": {
            "rows_by_status": ledger,
            "rows": sum(ledger.values()),
            "client_responses": main_responses,
        },
        "limits": limits_out,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs (under two minutes)")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default bench/results/...)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument("--fake-workers", type=int, default=2, help="fake upstream processes (all on the load core)")
    parser.add_argument("--buzz-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis for the Redis-limiter rows")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis-limiter rows")
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    args.started_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    default_name = f"bench-{'quick' if args.quick else 'full'}-{now:%Y%m%d-%H%M%S}.json"
    out: Path = args.out or BENCH_DIR / "results" / default_name
    signal.signal(signal.SIGTERM, _interrupt)
    # Piped output (make bench | tee) would otherwise be cut to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 150)
    began = time.monotonic()
    try:
        results = run(args, console)
    except KeyboardInterrupt:
        console.print("[red]interrupted; child processes stopped[/]")
        return 130
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    results["added_latency"] = report.added_latency(results["throughput"])
    results["limits_latency"] = report.limits_latency(results["throughput"])
    results["targets"] = report.targets(results)
    results["noise_warnings"] = report.noise_warnings(results["throughput"])
    report.show(console, results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"results written to {out} ({results['elapsed_s']:.0f} s)")
    missed = [t["name"] for t in results["targets"] if not t["met"]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
