"""A 500 MB upload and a 500 MB download pass through buzz while its memory stays flat.

curl sends and receives; the upstream is a real HTTP server in this process that hashes what it
receives and makes what it sends, so neither side holds the 500 MB either. buzz's resident
memory is sampled from /proc while the bytes pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from support import BuzzProcess, free_port

SIZE = 500 * 1024 * 1024
BLOCK = bytes(range(256)) * 4096  # 1 MiB, not all one byte
# What 500 MB through buzz may add to its resident memory: a few relay buffers, nowhere near it.
FLAT = 64 * 1024 * 1024


def _expected_sha256() -> str:
    digest = hashlib.sha256()
    for _ in range(SIZE // len(BLOCK)):
        digest.update(BLOCK)
    return digest.hexdigest()


class Sink:
    """The upstream: hashes a POSTed body as it arrives; streams SIZE bytes for a GET."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: tuple[int, str] | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _upload(self, request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        self.received = (size, digest.hexdigest())
        return web.json_response({"id": "file_big", "size_bytes": size})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        response.content_length = SIZE
        await response.prepare(request)
        for _ in range(SIZE // len(BLOCK)):
            await response.write(BLOCK)
        await response.write_eof()
        return response

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=SIZE * 2)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/file_big/content", self._download)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Sink:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


class RssSampler:
    """The peak VmRSS of a process, sampled every 20 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/status")
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        for line in self._path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[BuzzProcess]:
    with BuzzProcess(tmp_path_factory.mktemp("big") / "data", f"http://127.0.0.1:{sink.port}") as process:
        yield process


def _curl(gateway: BuzzProcess, key: str, *args: str) -> list[str]:
    return [
        "curl",
        "-sS",
        "--fail-with-body",
        "-H",
        "anthropic-version: 2023-06-01",
        "-H",
        f"x-api-key: {key}",
        *args,
    ]


def _feed(stdin: object) -> None:
    assert hasattr(stdin, "write") and hasattr(stdin, "close")
    for _ in range(SIZE // len(BLOCK)):
        stdin.write(BLOCK)
    stdin.close()


def test_a_500_mb_upload_streams_through_with_flat_memory(gateway: BuzzProcess, sink: Sink) -> None:
    key = gateway.create_key(project="big")
    assert gateway.process is not None
    with RssSampler(gateway.process.pid) as rss:
        baseline = rss.peak
        # -T - streams stdin up, chunked (no length known ahead), as a pipe would.
        curl = subprocess.Popen(
            _curl(gateway, key, "-X", "POST", "-T", "-", f"{gateway.url}/v1/files"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        feeder = threading.Thread(target=_feed, args=(curl.stdin,))
        feeder.start()
        assert curl.stdout is not None
        out = curl.stdout.read()  # not communicate(): it would close stdin under the feeder
        feeder.join()
        assert curl.wait(timeout=300) == 0, out
    assert sink.received == (SIZE, _expected_sha256())
    assert rss.peak - baseline < FLAT, f"RSS grew by {(rss.peak - baseline) / 2**20:.0f} MiB"
    [row] = gateway.ledger(1, where=lambda row: row["surface"] == "anthropic")
    assert row["status"] == 200


def test_a_500_mb_download_streams_through_with_flat_memory(gateway: BuzzProcess) -> None:
    key = gateway.create_key(project="big")
    assert gateway.process is not None
    digest, size = hashlib.sha256(), 0
    with RssSampler(gateway.process.pid) as rss:
        baseline = rss.peak
        curl = subprocess.Popen(_curl(gateway, key, f"{gateway.url}/v1/files/file_big/content"), stdout=subprocess.PIPE)
        assert curl.stdout is not None
        while chunk := curl.stdout.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        assert curl.wait(timeout=300) == 0
    assert (size, digest.hexdigest()) == (SIZE, _expected_sha256())
    assert rss.peak - baseline < FLAT, f"RSS grew by {(rss.peak - baseline) / 2**20:.0f} MiB"
