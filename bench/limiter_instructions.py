"""Instructions the limits path costs, alone: the in-process limiter and the admit stage, no HTTP.

    python bench/limiter_instructions.py [--iterations 2000]

Each part runs in a fresh Python under valgrind's callgrind: 200 warm-up iterations, then
instrumentation on (the process asks `callgrind_control` itself), `--iterations` measured ones,
instrumentation off. A key and a prepaid project carry every limit, set far above what the loop
reaches, as in `bench/run.py`. An empty iteration is measured too and taken off the others.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from buzz.billing.ledger import LedgerRow
from buzz.billing.pricing import PriceBook
from buzz.limits.base import Ask, Limits, Scope
from buzz.limits.memory import MemoryLimiter
from buzz.proxy.admit import Admission, ratelimit_headers

PARTS = {
    "empty": "an empty iteration (taken off the others)",
    "limiter": "the in-process limiter: reserve and settle",
    "admit": "the admit stage: worst-case cost, ask, reserve, settle",
    "headers": "the admit stage and the rate-limit headers built",
}
_WARMUP = 200
_BODY = b'{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"' + b"x" * 939 + b'"}]}'


class _Balances:
    """A BalanceStore that keeps nothing: the loop measures the limiter, not SQLite."""

    def get(self, project: str) -> int:
        return 10**18

    def add(self, project: str, delta: int) -> None:
        return None


def _toggle(state: str) -> None:
    subprocess.run(["callgrind_control", f"--instr={state}", str(os.getpid())], check=True, capture_output=True)


async def _loop(part: str, iterations: int) -> None:
    limiter = MemoryLimiter(balances=_Balances())
    admission = Admission(limiter, PriceBook())
    big = 10**15
    scopes = (
        Scope("key", "bench-key", Limits(100_000_000, 100_000_000_000, 10_000_000_000, 10**9, big, big)),
        Scope("project", "bench", Limits(200_000_000, 200_000_000_000, 20_000_000_000, 10**9, big, big), prepaid=True),
    )
    ask = Ask(256, 16, 1000)
    row = LedgerRow("req", time.time(), "anthropic", 200, "reported", 0.5, input_tokens=250, output_tokens=16)
    row.cost_nanos = 990
    model, now = "claude-sonnet-4-5", time.time()

    async def once() -> None:
        if part == "limiter":
            reservation, _ = await limiter.reserve(scopes, ask)
            await limiter.settle(reservation, 250, 16, 990)
        elif part in ("admit", "headers"):
            admitted = await admission.reserve(scopes, "anthropic", model, _BODY, 16, now)
            if part == "headers":
                ratelimit_headers(admitted.remaining)
            await admission.settle(admitted, row)

    for _ in range(_WARMUP):
        await once()
    _toggle("on")
    for _ in range(iterations):
        await once()
    _toggle("off")


def _measure(part: str, iterations: int, work: Path) -> float:
    out = work / f"{part}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--run",
        part,
        "--iterations",
        str(iterations),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    total = sum(
        int(line.split()[1])
        for path in work.glob(out.name + "*")
        for line in path.read_text().splitlines()
        if line.startswith("totals:")
    )
    return total / iterations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--run", choices=PARTS, help=argparse.SUPPRESS)  # inside valgrind
    args = parser.parse_args()
    if args.run is not None:
        asyncio.run(_loop(args.run, args.iterations))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="buzz-limiter-") as work:
        counts = {part: _measure(part, args.iterations, Path(work)) for part in PARTS}
    for part, text in PARTS.items():
        if part != "empty":
            print(f"{text:55} {counts[part] - counts['empty']:>10,.0f} instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
