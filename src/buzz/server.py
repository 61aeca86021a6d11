"""Running the gateway on uvicorn (uvloop + httptools), configured for a proxy."""

from __future__ import annotations

import gc
import logging
from typing import Literal, TypedDict

import uvicorn

from buzz.app import create_app
from buzz.config import Config
from buzz.proxy.forward import ResponseAborted


class _QuietAborts(logging.Filter):
    """A response cut because the upstream cut it is expected; its traceback is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseAborted))


class ServerOptions(TypedDict):
    loop: Literal["uvloop"]
    http: Literal["httptools"]
    lifespan: Literal["on"]
    access_log: bool
    server_header: bool
    date_header: bool
    proxy_headers: bool


def proxy_server_options() -> ServerOptions:
    """How uvicorn serves a proxy, whatever the app (the benchmark's pass-through floor too)."""
    return ServerOptions(
        loop="uvloop",
        http="httptools",
        lifespan="on",
        # The access log would print query strings, which can carry credentials (Gemini's
        # ?key=); the ledger is the record of requests.
        access_log=False,
        # Upstream responses carry their own Date and Server; buzz adds none of its own.
        server_header=False,
        date_header=False,
        proxy_headers=False,
    )


def uvicorn_config(config: Config) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        timeout_graceful_shutdown=int(config.shutdown_timeout),
        **proxy_server_options(),
    )


# A request allocates a few hundred short-lived objects and almost never a cycle; at Python's
# default (700) the young generation is collected every couple of requests.
_GC_THRESHOLDS = (20_000, 20, 20)


def run(config: Config) -> None:
    gc.set_threshold(*_GC_THRESHOLDS)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_QuietAborts())
    server = uvicorn.Server(uvicorn_config(config))
    logging.getLogger("buzz").info(
        "buzz listening on http://%s:%d (data in %s)", config.host, config.port, config.data_dir
    )
    server.run()
