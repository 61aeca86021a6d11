"""What the scaled-out stack keeps through changes, outages and kills, measured.

    python bench/durability.py [--outage-seconds 30] [--redis-url redis://127.0.0.1:6379/10]

On a PostgreSQL of its own (made with initdb, as the tests' outage server is) and the shared Redis:
1. **Changes.** Two buzz processes on one database; a key revoked through one store is refused by
   the other. The time from the revocation's commit to the first 401, over 20 revocations.
2. **An outage under load.** 16 clients send small `/v1/messages` requests without pause; the
   database is stopped for `--outage-seconds`, then started. Reports the answers by status
   during the outage, the most rows waiting in the spool, buzz's peak RSS, how long after the
   database's return the spool was down to the last moments' rows, and whether the ledger holds exactly one row per
   request answered.
3. **SIGKILL under load.** The same load, the database up; buzz is killed with SIGKILL, started
   again on the same data directory, and the ledger compared with the answers the clients got:
   rows lost are answered requests the ledger does not hold. Repeated `--kills` times.
Writes JSON to bench/results/durability-<time>.json; docs/performance.md has a run's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

import loadgen
from buzz.proxy.auth import generate_key
from buzz.store.postgres import PostgresStore
from procs import LOCALHOST, ROOT, Service, buzz_env, free_port, machine, rss_kib, wait_ready, write_results

sys.path.insert(0, str(ROOT / "tests"))
from pg_server import PostgresServer

BODY = loadgen.message_body(1024)


class Load:
    """`clients` loops posting without pause, in a thread of its own, until stopped; it counts
    statuses and keeps the request ids of the answered ones (`x-buzz-request-id`)."""

    def __init__(self, url: str, key: str, clients: int = 16) -> None:
        self.url, self.key, self.clients = url, key, clients
        self.statuses: Counter[int] = Counter()
        self.answered: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        headers = loadgen.request_headers(self.key)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def client() -> None:
                while not self._stop.is_set():
                    try:
                        async with session.post(self.url, data=BODY, headers=headers) as response:
                            await response.read()
                            self.statuses[response.status] += 1
                            if response.status == 200:
                                self.answered.add(response.headers.get("x-buzz-request-id", ""))
                    except (aiohttp.ClientError, TimeoutError):
                        self.statuses[0] += 1
                        await asyncio.sleep(0.05)

            await asyncio.gather(*(client() for _ in range(self.clients)))

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def _ledger_ids(url: str) -> list[str]:
    store = PostgresStore(url)
    try:
        return [str(row["id"]) for row in store.ledger_rows() if row["status"] == 200]
    finally:
        store.close()


def _spooled(data_dir: Path) -> int:
    total = 0
    for path in (data_dir / "spool").glob("ledger-*.jsonl"):
        try:
            total += path.read_bytes().count(b"\n")
        except FileNotFoundError:  # written and removed since the listing
            continue
    return total


def _buzz(name: str, env: dict[str, str], work: Path) -> tuple[Service, str]:
    port = free_port()
    service = Service(name, [sys.executable, "-m", "buzz", "serve", "--port", str(port)], env, work / f"{name}.log")
    service.start()
    wait_ready(service, f"http://{LOCALHOST}:{port}/healthz")
    return service, f"http://{LOCALHOST}:{port}"


def changes(env: dict[str, str], url: str, work: Path, trials: int = 20) -> dict[str, Any]:
    store = PostgresStore(url)
    a, a_url = _buzz("changes-a", env, work)
    b, b_url = _buzz("changes-b", env, work)
    delays = []
    try:

        async def measure() -> None:
            async with aiohttp.ClientSession() as session:
                for _ in range(trials):
                    key = generate_key()
                    store.create_key(key.key_id, "bench", None, key.secret_hash)
                    headers = loadgen.request_headers(key.token)
                    for base in (a_url, b_url):  # each holds it in its cache
                        async with session.post(f"{base}/v1/messages", data=BODY, headers=headers) as response:
                            assert response.status == 200, response.status
                    store.revoke_key(key.key_id)
                    committed = time.perf_counter()
                    while True:
                        async with session.post(f"{b_url}/v1/messages", data=BODY, headers=headers) as response:
                            if response.status == 401:
                                break
                    delays.append((time.perf_counter() - committed) * 1000)

        asyncio.run(measure())
    finally:
        a.stop()
        b.stop()
        store.close()
    delays.sort()
    return {"trials": trials, "p50_ms": round(delays[len(delays) // 2], 2), "max_ms": round(delays[-1], 2)}


def outage(env: dict[str, str], url: str, server: PostgresServer, work: Path, seconds: float) -> dict[str, Any]:
    data_dir = Path(env["BUZZ_DATA_DIR"])
    key = generate_key()
    store = PostgresStore(url)
    store.create_key(key.key_id, "bench", None, key.secret_hash)
    store.close()
    before = len(_ledger_ids(url))
    buzz, base = _buzz("outage", env, work)
    try:
        load = Load(f"{base}/v1/messages", key.token).start()
        time.sleep(3)
        at_stop = Counter(load.statuses)
        server.stop()
        peak_rss, peak_spool, began = 0, 0, time.monotonic()
        while time.monotonic() - began < seconds:
            peak_rss = max(peak_rss, rss_kib(buzz.pid))
            peak_spool = max(peak_spool, _spooled(data_dir))
            time.sleep(0.25)
        during = Counter(load.statuses) - at_stop
        server.start()
        back = time.monotonic()
        while _spooled(data_dir) > 1000:  # under load there is always the last few ms of rows
            peak_rss = max(peak_rss, rss_kib(buzz.pid))
            time.sleep(0.05)
        drained = time.monotonic() - back
        time.sleep(3)
        load.stop()
    finally:
        buzz.stop()
    ids = _ledger_ids(url)[before:]
    answered = load.answered
    return {
        "outage_seconds": seconds,
        "answers_during_outage": {str(k): v for k, v in sorted(during.items())},
        "answers_in_all": {str(k): v for k, v in sorted(load.statuses.items())},
        "peak_spooled_rows": peak_spool,
        "peak_rss_kib": peak_rss,
        "spool_drained_after_return_s": round(drained, 2),
        "rows": len(ids),
        "distinct_rows": len(set(ids)),
        "answered_without_row": len(answered - set(ids)),
        "rows_without_answer": len(set(ids) - answered),
    }


def kills(env: dict[str, str], url: str, work: Path, count: int) -> list[dict[str, Any]]:
    results = []
    for number in range(count):
        key = generate_key()
        store = PostgresStore(url)
        store.create_key(key.key_id, "bench", None, key.secret_hash)
        store.close()
        before = set(_ledger_ids(url))
        buzz, base = _buzz(f"kill-{number}", env, work)
        load = Load(f"{base}/v1/messages", key.token).start()
        time.sleep(5)
        assert buzz.process is not None
        buzz.process.send_signal(signal.SIGKILL)
        buzz.process.wait()
        load.stop()
        again, _ = _buzz(f"kill-{number}-again", env, work)  # writes what the killed one spooled
        time.sleep(2)
        again.stop()
        ids = set(_ledger_ids(url)) - before
        lost = load.answered - ids
        rate = load.statuses[200] / 5
        results.append(
            {
                "answered": len(load.answered),
                "rows": len(ids),
                "lost": len(lost),
                "answered_per_s": round(rate),
                "lost_ms_of_traffic": round(len(lost) / rate * 1000, 1) if rate else None,
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-seconds", type=float, default=30)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args(argv)
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="buzz-durability-"))
    fake_port = free_port()
    fake_env = buzz_env(work / "fake", fake_port, free_port())
    fake = Service(
        "fake",
        [sys.executable, "-m", "fakes.fake_anthropic", "--port", str(fake_port), "--workers", "2"],
        fake_env,
        work / "fake.log",
    )
    fake.start()
    result: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    try:
        wait_ready(fake, f"http://{LOCALHOST}:{fake_port}/v1/models")
        with PostgresServer() as server:
            env = buzz_env(work / "data", fake_port, free_port())
            env.update(BUZZ_DATABASE_URL=server.url, BUZZ_REDIS_URL=args.redis_url)
            result["changes"] = changes(env, server.url, work)
            console.print("changes", result["changes"])
            result["outage"] = outage(env, server.url, server, work, args.outage_seconds)
            console.print("outage", result["outage"])
            result["kills"] = kills(env, server.url, work, args.kills)
            console.print("kills", result["kills"])
    finally:
        fake.stop()
    write_results("durability", result, None, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
