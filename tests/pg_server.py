"""A PostgreSQL server of a test's own, on a free port, for tests that stop it: the shared one at
5432 is never stopped. Made with the system's initdb (as the `postgres` user when the tests run as
root, since PostgreSQL refuses to run as root), trust authentication, nothing tuned."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from stores import schema_url
from support import free_port, wait_until


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not versions:
        raise RuntimeError(f"no PostgreSQL {name} on this machine")
    return str(versions[-1])


class PostgresServer:
    def __init__(self) -> None:
        # Under /tmp rather than pytest's tmp_path: the server's user must be able to reach it.
        self.work_dir = Path(tempfile.mkdtemp(prefix="buzz-pg-"))
        self.data = self.work_dir / "data"
        self.port = free_port()
        self.server = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.url = schema_url(self.server, "public")

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        if not self.data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.work_dir, "postgres")
            self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.work_dir / "log"),
            "-o",
            f"-p {self.port} -k {self.work_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        )
        if not wait_until(self.answers, timeout=30):
            raise RuntimeError("postgres did not start")
        return self

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.server, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """An outage: the server goes away (its clients' connections are cut), its data stays."""
        if (self.data / "postmaster.pid").exists():
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()
