"""Running the gateway on uvicorn (uvloop + httptools), configured for a proxy.

buzz binds its listening socket itself, before anything else starts, so a port already taken is
one clear error and not a half-started gateway; it says it is listening only once uvicorn serves
on that socket. With `workers` above 1, `supervisor.py` forks that many processes onto it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict
from urllib.parse import urlsplit

import uvicorn

from buzz import providers
from buzz.app import Gateway, create_app, open_store
from buzz.asgi import Receive, Scope, Send
from buzz.config import PROVIDERS, Config
from buzz.connections import (
    App,
    ConnectionGuard,
    connection_cap,
    guarded_protocol,
    raise_descriptor_limit,
    refuse,
)
from buzz.proxy.forward import ResponseAborted
from buzz.supervisor import supervise

if TYPE_CHECKING:
    from buzz.metrics_server import SharedMetrics

log = logging.getLogger("buzz")


class StartError(Exception):
    """buzz cannot start as configured; the message says why, in one line."""


class ListenError(StartError):
    """The address cannot be listened on (taken, not local, not permitted)."""


class _QuietAborts(logging.Filter):
    """A response cut because the upstream cut it is expected; its traceback is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseAborted))


class ServerOptions(TypedDict):
    loop: Literal["uvloop"]
    http: Literal["httptools"] | type[asyncio.Protocol]
    lifespan: Literal["on"]
    access_log: bool
    server_header: bool
    date_header: bool
    proxy_headers: bool


def proxy_server_options(http: Literal["httptools"] | type[asyncio.Protocol] = "httptools") -> ServerOptions:
    """How uvicorn serves a proxy, whatever the app (the benchmark's pass-through floor too)."""
    return ServerOptions(
        loop="uvloop",
        http=http,
        lifespan="on",
        # uvicorn's access log would print query strings, which can carry credentials (Gemini's
        # ?key=); buzz writes its own (`buzz.access_log`).
        access_log=False,
        # Upstream responses carry their own Date and Server; buzz adds none of its own.
        server_header=False,
        date_header=False,
        proxy_headers=False,
    )


def uvicorn_config(config: Config, app: Gateway, guard: ConnectionGuard) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=config.log_level,
        timeout_graceful_shutdown=int(config.shutdown_timeout),
        timeout_keep_alive=config.keep_alive_timeout,
        **proxy_server_options(http=guarded_protocol(guard)),
    )


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), not yet listening; `ListenError` says why it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restarted buzz bind while the old one's connections are in TIME_WAIT; a port
        # another process listens on is still refused.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, which starts the connection guard and says when it really serves."""

    def __init__(
        self, config: uvicorn.Config, guard: ConnectionGuard, address: str, ready: Callable[[], None] | None
    ) -> None:
        super().__init__(config)
        self._guard = guard
        self._address = address
        self._ready = ready  # told once it serves, under a supervisor

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._guard.start(asyncio.get_running_loop())
        await super().startup(sockets=sockets)
        if self.started:
            log.info("buzz listening on %s", self._address)
            if self._ready is not None:
                self._ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._guard.stop()
        await super().shutdown(sockets=sockets)


def describe(config: Config, cap: int, descriptors: int) -> None:
    """What an operator needs to know at start: where the data is, which vendors can be reached."""
    if config.database_url:
        # Host and database only: the URL may carry a password.
        where = urlsplit(config.database_url)
        log.info(
            "data in PostgreSQL at %s%s; ledger spool in %s", where.hostname, where.path, config.spool_dir.resolve()
        )
    else:
        log.info("data in %s (database %s)", config.data_dir.resolve(), config.database_path.resolve())
    configured = [name for name in PROVIDERS if config.provider(name).api_key]
    missing = [name for name in PROVIDERS if name not in configured]
    if configured:
        log.info(
            "vendors with a credential: %s; without one (their models are not routable): %s",
            ", ".join(f"{name} ({len(config.provider(name).credentials)})" for name in configured),
            ", ".join(missing) or "none",
        )
        for name in configured:
            if config.provider(name).pool_overridden:
                log.warning(
                    "%s in the environment replaces the credential pool of [providers.%s] in the config "
                    "file: one credential, 'default', serves %s. Unset it to use the pool.",
                    providers.get(name).credential_env,
                    name,
                    name,
                )
    else:
        log.warning(
            "NO VENDOR CREDENTIAL IS SET: every model is unroutable, and every proxied request will be "
            "answered 404. Set one of %s or %s (or providers.<vendor>.api_key in the config file).",
            ", ".join(provider.credential_env for provider in providers.REGISTRY[:-1]),
            providers.REGISTRY[-1].credential_env,
        )
    log.info(
        "connections: at most %d at once (file descriptor limit %d); request heads within %gs; "
        "idle keep-alive closed after %ds; access log %s",
        cap,
        descriptors,
        config.header_timeout,
        config.keep_alive_timeout,
        config.access_log,
    )


# A request allocates a few hundred short-lived objects and almost never a cycle; at Python's
# default (700) the young generation is collected every couple of requests.
_GC_THRESHOLDS = (20_000, 20, 20)


def run(config: Config) -> int:
    """Serve until SIGTERM or SIGINT, and return the exit status; `StartError` before anything
    started if the configuration cannot be served or the bind fails."""
    if config.workers > 1 and not config.redis_url:
        raise StartError(
            f"{config.workers} workers need limits.redis_url (BUZZ_REDIS_URL): each process would otherwise "
            "count limits, spend caps and balances on its own, so a key allowed 100 requests a minute "
            f"could make {100 * config.workers}. Run one worker, or give buzz a Redis."
        )
    if config.database_url and not config.redis_url:
        raise StartError(
            "server.database_url (BUZZ_DATABASE_URL) needs limits.redis_url (BUZZ_REDIS_URL): PostgreSQL is "
            "for several buzz processes, and without Redis each would hold limits, spend caps and balances on "
            "its own. Give buzz a Redis, or leave the database unset to run on SQLite."
        )
    gc.set_threshold(*_GC_THRESHOLDS)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_QuietAborts())
    descriptors = raise_descriptor_limit()
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    address = f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"
    metrics = _bind_metrics(config)
    cap = connection_cap(descriptors, config.max_connections)
    describe(config, cap, descriptors)
    if config.workers == 1:
        # Values in memory, served by this process: a directory left in the environment would
        # send them to files nobody reads.
        os.environ.pop(_MULTIPROC_DIR, None)
        _serve(config, sock, cap, address, metrics_socket=metrics)
        return 0
    # The workers' connections queue on the socket from now on, whichever worker is ready first.
    sock.listen(_BACKLOG)
    # Migrations once, here: several processes applying them at once would race.
    open_store(config).close()
    log.info("buzz starting %d workers on %s", config.workers, address)

    shared = None if metrics is None else _share_metrics(metrics)

    def worker(number: int, ready: Callable[[], None]) -> None:
        if metrics is not None:
            metrics.close()  # the supervisor's to serve; a worker only writes its values
        label = f"{address} (worker {number} of {config.workers}, pid {os.getpid()})"
        _serve(config, sock, cap, label, ready)

    if shared is None:
        return supervise(config.workers, worker)
    try:
        return supervise(config.workers, worker, started=shared.start, exited=shared.exited)
    finally:
        shared.close()


# prometheus_client's multiprocess mode: where every process keeps its values, read when imported.
_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _bind_metrics(config: Config) -> socket.socket | None:
    """The metrics port, bound now so that a port already taken is a clear error at start."""
    if not config.metrics_port:
        return None
    try:
        metrics = bind(config.host, config.metrics_port)
    except ListenError as exc:
        raise ListenError(f"metrics_port: {exc}") from exc
    host, port = metrics.getsockname()[:2]
    where = f"[{host}]:{port}" if metrics.family == socket.AF_INET6 else f"{host}:{port}"
    log.info("metrics on http://%s/metrics, without authentication: expose it to the scraper only", where)
    return metrics


def _share_metrics(listener: socket.socket) -> SharedMetrics:
    """Before any worker is forked: a fresh directory for every worker's values, named in the
    environment before prometheus_client is imported (it reads it once, then)."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set")
    directory = Path(tempfile.mkdtemp(prefix="buzz-metrics-"))
    os.environ[_MULTIPROC_DIR] = str(directory)
    from buzz.metrics_server import SharedMetrics

    return SharedMetrics(listener, directory)


# uvicorn's own default, for the socket the parent listens on before any worker does.
_BACKLOG = 2048


def _serve(
    config: Config,
    sock: socket.socket,
    cap: int,
    address: str,
    ready: Callable[[], None] | None = None,
    metrics_socket: socket.socket | None = None,
) -> None:
    app = create_app(config, metrics_socket)
    guard = ConnectionGuard(cap, config.header_timeout, app.counters, _refusal(app))
    _Server(uvicorn_config(config, app, guard), guard, address, ready).run(sockets=[sock])


def _refusal(app: Gateway) -> App:
    """The 503 at the connection cap, with its access log line like any other answer."""
    access_log = app.access_log
    if access_log is None:
        return refuse

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        await access_log.observe(refuse, scope, receive, send)

    return logged
