"""forward: one upstream attempt, the original bytes up, the raw bytes down as they arrive.

The response is relayed chunk by chunk with no buffering; the meter reads each chunk only
after it was handed to the client. A client that goes away cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, Protocol

import aiohttp
from yarl import URL

from buzz.asgi import Receive, Send
from buzz.errors import GatewayError, Kind
from buzz.proxy.exchange import Exchange
from buzz.proxy.headers import client_response_headers, upstream_request_headers, upstream_request_id
from buzz.proxy.meter import Meter
from buzz.proxy.route import Route
from buzz.proxy.upload import Upload
from buzz.upstreams.base import UsageRules

# Only these are set by aiohttp itself; every other header is the client's own.
_WATCH_AFTER = 0.02
# The most of an answer held whole to be rewritten (batch objects are tens of kilobytes).
MAX_WHOLE_BYTES = 16 * 1024 * 1024
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class Passage(NamedTuple):
    """How a route beyond the routed ones carries its bytes, beyond the plain relay."""

    upload: Upload | None = None  # the request body, streamed up as it arrives
    # A small answer taken whole and given back changed, with its content-encoding: (body,
    # encoding) -> the new body, or None to relay it as it came. Batch objects' `results_url`.
    rewrite: Callable[[bytes, str], Awaitable[bytes | None]] | None = None
    tap: Tap | None = None  # reads a copy of each relayed chunk (batch results)
    # Where buzz must read the answer (batch objects and results): the only content codings to
    # leave in the client's `accept-encoding`, those it can read and write again. None: as sent.
    readable: frozenset[str] | None = None


class Tap(Protocol):
    def begin(self, content_encoding: str) -> None:
        """The answer's headers arrived; its chunks follow."""
        ...

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None:
        """The whole answer was relayed."""
        ...


PLAIN = Passage()


class Unreachable(GatewayError):
    """No connection to the upstream could be made: nothing of the request left, so it is the one
    failure another credential may safely be tried after."""


class ResponseAborted(Exception):
    """Raised after the response started, so the server closes the client connection.

    The client then sees the same cut the upstream made, instead of a body that looks complete.
    """


def make_session(connect_timeout: float, read_timeout: float) -> aiohttp.ClientSession:
    """One pooled keep-alive client for all upstreams: raw bytes, no decompression, no defaults."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout),
        auto_decompress=False,
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class _DisconnectWatch:
    """Cancels the relay when the client goes away.

    ASGI reports a disconnect only to a pending `receive()`, so something must wait on it while
    the relay waits on the upstream. A task per request costs a measurable slice of a fast
    request, so the watch starts only once a request has lasted `_WATCH_AFTER` seconds: quick
    answers never pay for it, and a client that left earlier is seen at once when it starts.
    """

    __slots__ = ("_handle", "_receive", "_relay", "_task", "done", "gone")

    def __init__(self, receive: Receive, relay: asyncio.Task[Any], start: bool = True) -> None:
        self._receive = receive
        self._relay = relay
        self._task: asyncio.Task[None] | None = None
        self.done = False
        self.gone = False
        self._handle: asyncio.TimerHandle | None = None
        if start:
            self.start()

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(_WATCH_AFTER, self._start)

    def _start(self) -> None:
        if not self.done:
            self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                if not self.done:
                    self.gone = True
                    self._relay.cancel()
                return

    def stop(self) -> None:
        self.done = True
        if self._handle is not None:
            self._handle.cancel()
        if self._task is not None:
            self._task.cancel()


async def forward(
    session: aiohttp.ClientSession,
    x: Exchange,
    route: Route,
    method: str,
    client_headers: list[tuple[bytes, bytes]],
    body: bytes,
    rules: UsageRules,
    receive: Receive,
    send: Send,
    meter_max_bytes: int,
    passage: Passage = PLAIN,
    answered: Callable[[int, Mapping[str, str]], None] | None = None,
) -> None:
    """`passage`: how a route beyond the routed ones carries its bytes (see `Passage`).
    `answered`: told the upstream's status and headers as they arrive (the credential pool)."""
    task = asyncio.current_task()
    assert task is not None
    upload = passage.upload
    # While an upload reads `receive`, it sees a client that leaves itself; the watch starts once
    # the upload has read the whole body, even if the upstream answered before that.
    watch = _DisconnectWatch(receive, task, start=upload is None)
    if upload is not None:
        upload.on_finish = watch.start
    try:
        try:
            response = await _open(session, route, method, client_headers, body, upload, passage.readable)
        except GatewayError:
            if upload is not None and upload.failure is not None:
                raise upload.failure from None  # the client left, or sent too much: not the upstream
            raise
        if answered is not None:
            answered(response.status, response.headers)
        if passage.rewrite is not None and 200 <= response.status < 300:
            await _relay_rewritten(x, response, send, watch, passage.rewrite)
        else:
            await _relay(x, response, rules, send, watch, meter_max_bytes, passage.tap)
    except asyncio.CancelledError:
        if not watch.gone:
            raise
        task.uncancel()
        x.error_type = "client_disconnected"
        if not x.response_started:
            x.status = 499  # nginx's code for "client closed request": nobody got an answer
    finally:
        watch.stop()


async def _open(
    session: aiohttp.ClientSession,
    route: Route,
    method: str,
    client_headers: list[tuple[bytes, bytes]],
    body: bytes,
    upload: Upload | None,
    readable: frozenset[str] | None = None,
) -> aiohttp.ClientResponse:
    """The one upstream attempt, up to its status and headers; a failure here is buzz's to report."""
    headers = upstream_request_headers(client_headers, route.credential)
    if readable is not None:
        headers = [(n, _readable(v, readable) if n == "accept-encoding" else v) for n, v in headers]
    data: bytes | Upload | None = body or None  # no body, no data: a GET goes up without a length
    if upload is not None:
        data = upload
        # The length the client declared goes on with the body; without one it goes up chunked.
        length = next((value for name, value in client_headers if name == b"content-length"), None)
        if length is not None:
            headers.append(("content-length", length.decode("latin-1")))
    try:
        # encoded=True: the path and query go out exactly as the client wrote them, not re-quoted.
        url = URL(route.url, encoded=True)
        response = await session.request(method, url, headers=headers, data=data, allow_redirects=False)
    except aiohttp.ConnectionTimeoutError as exc:
        raise Unreachable(Kind.TIMEOUT, f"upstream {route.provider}: no connection within the time allowed") from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise GatewayError(Kind.TIMEOUT, f"upstream {route.provider} did not answer in time") from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unresolvable, TLS failed: nothing was sent
        raise Unreachable(Kind.UPSTREAM, f"upstream {route.provider} unreachable: no connection could be made") from exc
    except aiohttp.ClientError as exc:
        raise GatewayError(
            Kind.UPSTREAM, f"upstream {route.provider} unreachable or closed the connection before answering"
        ) from exc
    return response


async def _relay(
    x: Exchange,
    response: aiohttp.ClientResponse,
    rules: UsageRules,
    send: Send,
    watch: _DisconnectWatch,
    meter_max_bytes: int,
    tap: Tap | None = None,
) -> None:
    """The upstream's status, headers and body to the client as they arrive; the meter reads after."""
    complete = False
    meter = Meter(
        rules,
        response.headers.get("content-type", ""),
        response.headers.get("content-encoding", ""),
        response.status,
        meter_max_bytes,
    )
    try:
        x.status = response.status
        x.upstream_request_id = upstream_request_id(response.headers)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": client_response_headers(response.raw_headers, x.request_id.encode(), x.extra_headers),
            }
        )
        x.response_started = True
        if tap is not None:
            tap.begin(response.headers.get("content-encoding", ""))
        try:
            async for chunk in response.content.iter_any():
                if x.first_byte_at is None:
                    x.first_byte_at = time.perf_counter()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                x.bytes_out += len(chunk)
                meter.feed(chunk)
                if tap is not None:
                    tap.feed(chunk)
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            x.error_type = "upstream_timeout"
            raise ResponseAborted("upstream went silent mid-response") from exc
        except aiohttp.ClientError as exc:
            x.error_type = "upstream_reset"
            raise ResponseAborted("upstream closed the connection mid-response") from exc
        complete = True
        watch.done = True  # from here on, the server reports the finished response as a disconnect
        if tap is not None:
            tap.finish()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        # The client has every byte. What the meter left waiting (a burst of lines, compressed
        # input beyond a chunk's budget) it reads now, one bounded step per turn of the loop.
        while meter.behind:
            await asyncio.sleep(0)  # a turn for everything else first
            meter.catch_up()
    finally:
        x.meter = meter.result(complete)
        if complete:
            response.release()
        else:
            response.close()  # drops the upstream connection: the vendor stops generating


async def _relay_rewritten(
    x: Exchange,
    response: aiohttp.ClientResponse,
    send: Send,
    watch: _DisconnectWatch,
    rewrite: Callable[[bytes, str], Awaitable[bytes | None]],
) -> None:
    """A small answer read whole, changed by `rewrite`, and sent with its new length. One too
    large to hold, or that `rewrite` declines, goes on as it came."""
    complete = False
    x.status = response.status
    x.upstream_request_id = upstream_request_id(response.headers)
    try:
        held: list[bytes] = []
        size = 0
        try:
            async for chunk in response.content.iter_any():
                if x.first_byte_at is None:
                    x.first_byte_at = time.perf_counter()
                held.append(chunk)
                size += len(chunk)
                if size > MAX_WHOLE_BYTES:
                    break
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise GatewayError(Kind.TIMEOUT, "upstream went silent before its answer was complete") from exc
        except aiohttp.ClientError as exc:
            raise GatewayError(Kind.UPSTREAM, "upstream closed the connection before its answer was complete") from exc
        body = b"".join(held)
        headers = client_response_headers(response.raw_headers, x.request_id.encode(), x.extra_headers)
        changed = await rewrite(body, response.headers.get("content-encoding", "")) if size <= MAX_WHOLE_BYTES else None
        if changed is not None:
            body = changed
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        x.response_started = True
        await send({"type": "http.response.body", "body": body, "more_body": size > MAX_WHOLE_BYTES})
        x.bytes_out += len(body)
        if size > MAX_WHOLE_BYTES:  # too large to hold: the rest goes on as it comes
            try:
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    x.bytes_out += len(chunk)
            except (aiohttp.ServerTimeoutError, TimeoutError, aiohttp.ClientError) as exc:
                x.error_type = "upstream_reset"
                raise ResponseAborted("upstream closed the connection mid-response") from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        complete = True
        watch.done = True
    finally:
        if complete:
            response.release()
        else:
            response.close()


def _readable(accept: str, readable: frozenset[str]) -> str:
    """`accept-encoding` with only the codings in `readable` (identity is always acceptable)."""
    kept = [part for part in accept.split(",") if part.split(";")[0].strip().lower() in readable]
    return ",".join(kept).strip() or "identity"
