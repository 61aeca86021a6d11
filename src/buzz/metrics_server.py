"""The metrics port: `GET /metrics` in Prometheus's text format, from a thread of its own.

A port of its own rather than a route of the gateway's: a scrape never waits in line with
requests on the event loop, and under `buzz serve --workers N` the supervisor, which serves no
request, answers it with every worker's values added up (`SharedMetrics`). It has no
authentication: it is for a scraper on a private network, never for the internet.

Importing this module imports prometheus_client, which picks where values live (memory, or the
files of `PROMETHEUS_MULTIPROC_DIR`) once, at import: the supervisor sets that variable first.
"""

from __future__ import annotations

import logging
import math
import shutil
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("buzz.metrics")
HEADROOM = "buzz_upstream_credential_headroom"
_WITH_CREATED = frozenset(("counter", "histogram", "summary"))
# A scraper that stops mid-request gives its thread back after this long.
_CLIENT_TIMEOUT = 10.0


class Exposed(Collector):
    """What is served of `collectors`, the same with one process or several:
    - no `_created` samples: the text format would make each a series of its own, and the
      supervisor's sums have none;
    - no headroom for a credential whose headroom nobody knows. A gauge cannot drop a series in
      multiprocess mode (its last value stays in the worker's file), so unknown is set as +Inf,
      which also never wins the lowest over live workers, and is left out here."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            for family in collector.collect():
                if family.name == HEADROOM:
                    family.samples = [sample for sample in family.samples if not math.isinf(sample.value)]
                elif family.type in _WITH_CREATED:
                    family.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
                yield family


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a scrape in progress never holds up the process's exit
    request_queue_size = 64  # several scrapers (an HA pair, a person with curl) may come at once

    def __init__(self, listener: socket.socket, registry: Collector) -> None:
        super().__init__(listener.getsockname()[:2], _Handler, bind_and_activate=False)
        # The socket was bound at start, where a port already taken is one clear error.
        self.socket.close()
        self.socket = listener
        self.address_family = listener.family
        self.registry = registry
        self.server_activate()


class _Handler(BaseHTTPRequestHandler):
    timeout = _CLIENT_TIMEOUT

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/metrics":
            self._answer(404, b"only /metrics is served here\n", "text/plain; charset=utf-8")
            return
        encode, content_type = choose_encoder(self.headers.get("accept", ""))
        try:
            body = encode(cast(_Server, self.server).registry)
        except Exception as exc:
            log.error("metrics: collecting failed (%s)", type(exc).__name__)
            self._answer(500, b"collecting the metrics failed\n", "text/plain; charset=utf-8")
            return
        self._answer(200, body, content_type)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Nothing: a scrape every few seconds would fill the log."""


class MetricsServer:
    """Serves `registry` on an already bound socket, from a daemon thread."""

    def __init__(self, listener: socket.socket, registry: Collector) -> None:
        self._server = _Server(listener, registry)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.2,), name="buzz-metrics-server")
        self._thread.daemon = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class SharedMetrics:
    """The supervisor's side under several workers: it serves what the workers wrote to
    `directory` (prometheus_client's multiprocess mode), drops a dead worker's live gauges, and
    removes the directory when it stops. Counters of a worker that died stay in the sum, so
    totals never go back."""

    def __init__(self, listener: socket.socket, directory: Path) -> None:
        self._directory = directory
        registry = CollectorRegistry()
        registry.register(Exposed(multiprocess.MultiProcessCollector(None, path=str(directory))))  # type: ignore[no-untyped-call]
        self._server = MetricsServer(listener, registry)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def start(self) -> None:
        self._server.start()

    def exited(self, pid: int) -> None:
        multiprocess.mark_process_dead(pid, str(self._directory))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._server.close()
        shutil.rmtree(self._directory, ignore_errors=True)
