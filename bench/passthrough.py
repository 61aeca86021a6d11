"""The floor under buzz: the same server and client with nothing of buzz's own in between.

A plain ASGI app, served with buzz's own uvicorn settings, that forwards each request to one
upstream through buzz's own aiohttp session and relays the answer chunk by chunk. No key check,
no routing, no meter, no ledger. What buzz costs beyond this is buzz's own work.

    python bench/passthrough.py --port 9100 --upstream http://127.0.0.1:9001 [--workers N]

With `--workers N` it runs N processes on the port the way `buzz serve --workers N` does (the
same supervisor), so that the two scale under the same process model.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn
from yarl import URL

from buzz.proxy.forward import make_session
from buzz.server import bind, proxy_server_options
from buzz.supervisor import supervise

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_DROP_UP = {b"host", b"content-length", b"x-api-key", b"authorization", b"connection"}
_DROP_DOWN = {b"transfer-encoding", b"connection"}


class Passthrough:
    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._session: aiohttp.ClientSession | None = None

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
    ) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self._session is not None
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _DROP_UP]
        headers.append(("x-api-key", "passthrough"))
        url = URL(self._upstream + scope["path"], encoded=True)
        response = await self._session.request(
            scope["method"], url, headers=headers, data=b"".join(chunks), allow_redirects=False
        )
        out = [(k, v) for k, v in response.raw_headers if k.lower() not in _DROP_DOWN]
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        response.release()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._session = make_session(connect_timeout=10.0, read_timeout=600.0)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9001")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers == 1:
        uvicorn.run(
            Passthrough(args.upstream), host="127.0.0.1", port=args.port, log_level="warning", **proxy_server_options()
        )
        return
    sock = bind("127.0.0.1", args.port)
    sock.listen(2048)

    def worker(_number: int, ready: Callable[[], None]) -> None:
        config = uvicorn.Config(Passthrough(args.upstream), log_level="warning", **proxy_server_options())
        _ReadyServer(config, ready).run(sockets=[sock])

    raise SystemExit(supervise(args.workers, worker))


class _ReadyServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._ready()


if __name__ == "__main__":
    main()
