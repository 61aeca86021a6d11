"""Instructions per request: buzz run under valgrind's callgrind, which counts instructions.

Wall-clock figures on a shared VM move 10-30% from run to run; an instruction count does not
move with the machine's load, so it shows what a change to the code costs or saves. It is not
a speed (cache misses and the kernel are not in it), and it is read next to `bench/run.py`.

    python bench/instructions.py [--requests 1000] [--out bench/results/instructions.json]

For each workload, a fresh buzz starts under callgrind with instrumentation off. After 200
warm-up requests, instrumentation is switched on, the counters are zeroed, `--requests`
requests are sent one at a time on one keep-alive connection, and the counters are dumped.
The count covers every thread of the process (the ledger writer too) and is divided by the
requests. The fake upstreams run outside valgrind. The floor is `bench/passthrough.py`, the same
server and client with nothing of buzz's own, measured the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import limits
import ttfb
from loadgen import chat_body, message_body, request_headers
from procs import LOCALHOST, Service, buzz_env, create_key, free_port, pin_prefix, wait_ready

BENCH_DIR = Path(__file__).resolve().parent
_WARMUP = 200
_START_TIMEOUT_S = 240.0  # Python's imports under valgrind take a while


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    path: str
    auth: str  # loadgen.request_headers' style
    api: str  # which fake answers: "messages" (Anthropic) or "chat" (OpenAI)
    key: str  # which key buzz gets: "plain", "limits" or "redis" (limits through Redis); "" for the floor


WORKLOADS = (
    Workload("passthrough floor, /v1/messages", "/v1/messages", "x-api-key", "messages", ""),
    Workload("/v1/messages", "/v1/messages", "x-api-key", "messages", "plain"),
    Workload("/v1/messages, limits on (in-process)", "/v1/messages", "x-api-key", "messages", "limits"),
    Workload("/v1/messages, limits on (Redis)", "/v1/messages", "x-api-key", "messages", "redis"),
    Workload("/v1/chat/completions", "/v1/chat/completions", "bearer", "chat", "plain"),
)


def _request(port: int, workload: Workload, key: str | None) -> bytes:
    body = chat_body(1024) if workload.api == "chat" else message_body(1024)
    headers = request_headers(key, workload.auth)
    lines = [f"POST {workload.path} HTTP/1.1", f"host: {LOCALHOST}:{port}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _send(sock: socket.socket, request: bytes, count: int) -> None:
    for _ in range(count):
        ttfb.exchange(sock, request, 30.0)


def _dumped_total(out_file: Path, before: set[Path]) -> int:
    """The `totals:` line of the dump that appeared since `before`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = set(out_file.parent.glob(out_file.name + "*")) - before
        for path in new:
            for line in path.read_text().splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=60)


def measure(
    argv: list[str],
    core: int | None,
    env: dict[str, str],
    port: int,
    request: bytes,
    requests: int,
    work: Path,
    during: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> int:
    """Instructions per request of the server `argv` (run under callgrind) for `request`;
    `during()` is entered for the counted requests only (a scraper of the metrics port, say)."""
    out_file = work / f"callgrind-{port}.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}"]
    command = [*pin_prefix(core), *valgrind, *argv]  # taskset execs valgrind: same pid, same core
    service = Service(f"callgrind {port}", command, env, work / f"callgrind-{port}.log")
    service.start()
    try:
        _wait_listening(service, port)
        with socket.create_connection((LOCALHOST, port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _send(sock, request, _WARMUP)
            _control(service.pid, "--instr=on")
            _control(service.pid, "--zero")
            with during():
                _send(sock, request, requests)
            before = set(work.glob(out_file.name + "*"))
            _control(service.pid, "--dump")
            total = _dumped_total(out_file, before)
            _control(service.pid, "--instr=off")
    finally:
        service.stop()
    return round(total / requests)


def _wait_listening(service: Service, port: int) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process is not None and service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited early:\n{service.log_tail()}")
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{service.name} not listening after {_START_TIMEOUT_S:.0f} s")


def run(requests: int, buzz_core: int | None, load_core: int | None, redis_url: str | None) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="buzz-instructions-"))
    fakes: dict[str, Service] = {}
    redis_key: limits.LimitedKey | None = None
    try:
        ports = {"messages": free_port(), "chat": free_port()}
        modules = {"messages": "fakes.fake_anthropic", "chat": "fakes.fake_openai"}
        for api, module in modules.items():
            argv = [*pin_prefix(load_core), sys.executable, "-m", module, "--port", str(ports[api]), "--workers", "1"]
            fakes[api] = Service(f"fake {api}", argv, dict(os.environ), work / f"fake-{api}.log")
            fakes[api].start()
        for api, service in fakes.items():
            wait_ready(service, f"http://{LOCALHOST}:{ports[api]}/v1/models")
        envs = {"plain": buzz_env(work / "data", ports["messages"], ports["chat"])}
        envs["limits"] = envs[""] = envs["plain"]
        keys = {"plain": create_key(envs["plain"])}
        keys["limits"] = limits.create_limited_key(envs["limits"], "bench-limits").key
        if redis_url is not None:
            envs["redis"] = {**buzz_env(work / "redis", ports["messages"], ports["chat"]), "BUZZ_REDIS_URL": redis_url}
            project = f"bench-limits-{uuid.uuid4().hex[:8]}"  # its own keys in the shared Redis, deleted after
            redis_key = limits.create_limited_key(envs["redis"], project)
            keys["redis"] = redis_key.key
        results: dict[str, int] = {}
        for workload in WORKLOADS:
            if workload.key not in envs:
                print(f"{workload.name:45} skipped: Redis does not answer at {redis_url}", flush=True)
                continue
            port = free_port()
            if workload.key:
                argv = [sys.executable, "-m", "buzz", "serve", "--host", LOCALHOST, "--port", str(port)]
            else:
                upstream = f"http://{LOCALHOST}:{ports[workload.api]}"
                argv = [sys.executable, str(BENCH_DIR / "passthrough.py"), "--port", str(port), "--upstream", upstream]
            request = _request(port, workload, keys.get(workload.key))
            results[workload.name] = measure(argv, buzz_core, envs[workload.key], port, request, requests, work)
            print(f"{workload.name:45} {results[workload.name]:>10,} instructions a request", flush=True)
        return {"requests": requests, "warmup": _WARMUP, "instructions_per_request": results}
    finally:
        for service in fakes.values():
            service.stop()
        if redis_key is not None and redis_url is not None:
            limits.forget_redis_state(redis_url, redis_key)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--buzz-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="for the Redis limiter's figure")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    redis_url = None if limits.redis_unreachable(args.redis_url) else args.redis_url
    results = run(args.requests, args.buzz_core, args.load_core, redis_url)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
