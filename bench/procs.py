"""The processes a benchmark run owns (fake upstream, buzz), and what /proc says about them."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

LOCALHOST = "127.0.0.1"
# Not a real credential: the fake upstream accepts anything, and buzz only needs one to route.
UPSTREAM_KEY = "bench-not-a-real-key"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# The repository root: `python -m fakes.…` finds the fake upstreams there (they are not installed).
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pin_prefix(core: int | None) -> list[str]:
    """`taskset -c N`, or nothing when pinning is off (fewer than two usable cores)."""
    return [] if core is None else ["taskset", "-c", str(core)]


@dataclass
class Service:
    """A child process in its own process group, so its forked workers die with it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM for a graceful exit (buzz flushes its ledger), SIGKILL to the group if it lingers."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        # The group id is the pid we started; this reaches only that process and its own forks.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        self.process = None  # stopping twice (explicitly, then at exit) must not signal anything again
        if self._log is not None:
            self._log.close()
            self._log = None


def wait_ready(service: Service, url: str, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 2xx; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process is not None and service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited early:\n{service.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - local http URL
                if 200 <= response.status < 300:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} not ready after {timeout:.0f} s:\n{service.log_tail()}")


def buzz_env(data_dir: Path, fake_port: int, fake_openai_port: int) -> dict[str, str]:
    # The default configuration and nothing else: a BUZZ_* left in the shell would change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZZ_")}
    env.update(
        BUZZ_DATA_DIR=str(data_dir),
        ANTHROPIC_API_KEY=UPSTREAM_KEY,
        BUZZ_ANTHROPIC_BASE_URL=f"http://{LOCALHOST}:{fake_port}",
        OPENAI_API_KEY=UPSTREAM_KEY,
        BUZZ_OPENAI_BASE_URL=f"http://{LOCALHOST}:{fake_openai_port}/v1",
    )
    return env


def create_key(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "buzz", "keys", "create", "--project", "bench"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included."""
    # The command name (field 2) may hold spaces; the fields after its closing paren are fixed.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a supervisor's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def cpu_jiffies() -> dict[int, tuple[int, int, int]]:
    """Per core (busy, steal, total) jiffies from /proc/stat; busy includes steal."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(v) for v in fields[:8]]  # guest time is already counted in user
            total = sum(values)
            out[int(name[3:])] = (total - values[3] - values[4], values[7], total)  # minus idle, iowait
    return out


def core_usage(
    before: dict[int, tuple[int, int, int]], after: dict[int, tuple[int, int, int]], core: int
) -> tuple[float, float]:
    """(busy %, steal %) of one core between two `cpu_jiffies()` snapshots."""
    busy, steal, total = (a - b for a, b in zip(after[core], before[core], strict=True))
    return round(100 * busy / max(1, total), 1), round(100 * steal / max(1, total), 1)


def machine() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "wrk": shutil.which("wrk"),
    }


def write_results(name: str, result: object, out: Path | None, console: Any) -> Path:
    """`result` as JSON in `out`, or in bench/results/<name>-<time>.json; says where on `console`."""
    path = out or ROOT / "bench" / "results" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"results written to {path}")
    return path
