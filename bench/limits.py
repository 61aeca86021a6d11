"""Limits on: a key with every limit set, in a prepaid project with limits of its own, made with
the buzz CLI; the checks after the run (no request turned away, the balance down by exactly the
ledger's cost); and, for the Redis limiter, where redis-server's CPU went.

Every limit is set far above what a run can reach, so the limiter does all its work on every
request (reserve, settle, balance draw-down) and never says no. A run sends about 70,000
requests on such a key; each reserves one request, ~256 input tokens (1 KB / 4), 16 output
tokens and well under $0.01 of worst-case cost.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from buzz.store import open_store

KEY_LIMITS = {
    "--rpm": "100000000",
    "--itpm": "100000000000",
    "--otpm": "10000000000",
    "--concurrency": "1000",
    "--daily-usd": "1000000",
    "--monthly-usd": "1000000",
}
PROJECT_LIMITS = {
    "--rpm": "200000000",
    "--itpm": "200000000000",
    "--otpm": "20000000000",
    "--concurrency": "2000",
    "--daily-usd": "2000000",
    "--monthly-usd": "2000000",
}
BALANCE_USD = "1000000"
_NANOS_PER_USD = Decimal(1_000_000_000)
# A response that went through the limiter carries its headroom; one without it was not limited.
LIMITED_HEADERS = ("x-buzz-ratelimit-key-rpm-remaining", "x-buzz-ratelimit-project-balance-remaining")
# Statuses that are not a rejection: answered, or cut off by the client (wrk stopping mid-request).
_NOT_REJECTED = {200, 499}


def _flags(limits: dict[str, str]) -> list[str]:
    return [part for option, value in limits.items() for part in (option, value)]


def _buzz(env: dict[str, str], args: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "buzz", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"buzz {shlex.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


def _nanos(usd: str) -> int:
    amount = Decimal(usd) * _NANOS_PER_USD
    if amount != amount.to_integral_value():
        raise ValueError(f"{usd!r} is not a whole number of nano-dollars")
    return int(amount)


@dataclass(frozen=True, slots=True)
class LimitedKey:
    project: str
    key: str
    key_id: str
    balance_start_nanos: int
    commands: tuple[str, ...]  # as run, key and data dir left out


def create_limited_key(env: dict[str, str], project: str) -> LimitedKey:
    """A prepaid project with limits and BALANCE_USD on it, and one key in it with every limit set."""
    steps = [
        ["projects", "create", project, "--prepaid", *_flags(PROJECT_LIMITS)],
        ["balance", "add", project, BALANCE_USD],
        ["keys", "create", "--project", project, *_flags(KEY_LIMITS)],
    ]
    _buzz(env, steps[0])
    balance = _nanos(_buzz(env, steps[1]))  # prints the new balance: in Redis when BUZZ_REDIS_URL is set
    key = _buzz(env, steps[2])
    key_id = key.split("-")[1]  # buzz-<id>-<secret>
    commands = tuple(shlex.join([sys.executable, "-m", "buzz", *step]) for step in steps)
    return LimitedKey(project, key, key_id, balance, commands)


def verify(env: dict[str, str], database: Path, limited: LimitedKey, client_errors: int) -> dict[str, Any]:
    """After the gateway has stopped (its ledger flushed): what the ledger holds for the key, and
    whether the prepaid balance went down by exactly the ledger's cost."""
    balance_end = _nanos(_buzz(env, ["balance", "add", limited.project, "0"]))
    store = open_store(database, env.get("BUZZ_DATABASE_URL"))
    try:
        rows = [row for row in store.ledger_rows() if row["key_id"] == limited.key_id]
    finally:
        store.close()
    by_status = {str(status): n for status, n in Counter(row["status"] for row in rows).items()}
    errors = {str(e): n for e, n in Counter(row["error_type"] for row in rows if row["error_type"]).items()}
    cost = sum(int(row["cost_nanos"] or 0) for row in rows)
    unpriced = sum(row["cost_nanos"] is None for row in rows)
    rejected = sum(n for status, n in by_status.items() if int(status) not in _NOT_REJECTED)
    drop = limited.balance_start_nanos - balance_end
    return {
        "project": limited.project,
        "key_id": limited.key_id,
        "key_limits": KEY_LIMITS,
        "project_limits": PROJECT_LIMITS,
        "commands": list(limited.commands),
        "ledger_rows_by_status": by_status,
        "ledger_error_types": errors,
        "ledger_rows_unpriced": int(unpriced or 0),
        "rejected": rejected,
        "client_errors": client_errors,
        "balance_start_nanos": limited.balance_start_nanos,
        "balance_end_nanos": balance_end,
        "balance_drop_nanos": drop,
        "ledger_cost_nanos": int(cost),
        "balance_matches_ledger": drop == int(cost),
    }


# --- Redis -------------------------------------------------------------------------------------


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


def redis_unreachable(url: str) -> str | None:
    """None when Redis answers a PING, else why not."""
    try:
        with contextlib.closing(redis_client(url)) as client:
            client.ping()
    except (redis.RedisError, OSError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def redis_server(url: str) -> dict[str, Any]:
    """redis-server's pid when it runs on this machine (so /proc has its CPU), its version and cores."""
    with contextlib.closing(redis_client(url)) as client:
        info: dict[str, Any] = client.info("server")
    pid = int(info["process_id"])
    local = False
    with contextlib.suppress(OSError):
        local = Path(f"/proc/{pid}/comm").read_text().strip().startswith("redis")
    out: dict[str, Any] = {"version": info.get("redis_version"), "pid": pid if local else None}
    if local:
        out["allowed_cores"] = sorted(os.sched_getaffinity(pid))
    return out


def forget_redis_state(url: str, limited: LimitedKey) -> int:
    """Delete this run's keys from the shared Redis (buzz's default prefix `buzz:`): the balance has
    no TTL and would stay there for good. Nothing else in Redis is touched."""
    deleted = 0
    with contextlib.suppress(redis.RedisError, OSError), contextlib.closing(redis_client(url)) as client:
        for pattern in (f"buzz:project:{limited.project}:*", f"buzz:key:{limited.key_id}:*"):
            names = list(client.scan_iter(match=pattern, count=1000))
            if names:
                deleted += int(client.delete(*names))
    return deleted


def _task_states(stats: list[Path]) -> list[tuple[str, int]]:
    """(state, core it last ran on) for each thread, from its /proc/<pid>/task/<tid>/stat."""
    out = []
    for stat in stats:
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            out.append((fields[0], int(fields[36])))  # fields 3 (state) and 39 (processor)
    return out


class CoreSampler:
    """Every `interval` seconds, which core each running (or runnable) thread of `pid` is on.

    The split of the samples between cores is where the process's CPU time went, to within
    sampling error; /proc keeps no per-core CPU time for a process. At 50 per second it costs
    a few percent of the core this script runs on (the load core)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._stats = list(Path(f"/proc/{pid}/task").glob("*/stat"))  # redis-server's threads are fixed
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="core-sampler", daemon=True)
        self.samples = 0
        self.running: Counter[int] = Counter()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.samples += 1
            for state, core in _task_states(self._stats):
                if state == "R":
                    self.running[core] += 1

    def __enter__(self) -> CoreSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
