"""A small Redis client for the limiter's hot path: one connection, calls pipelined on it.

Every limited request makes two Redis calls (reserve and settle). Through redis-py's asyncio
client each cost about 80 µs of buzz's CPU at concurrency 32 (a pooled connection checked out
and back, the command packed and the reply parsed in layers of Python); here one costs about
16 µs: a call writes its command to the one socket and waits on a future, and replies, which
Redis sends in order, resolve the futures in order. One connection is enough, since Redis runs
one command at a time; pipelining also spares Redis a read and a write system call per command.

Only what the limiter needs: RESP2 replies, AUTH and SELECT from the URL, TLS for rediss://, a
deadline per call, one reconnection per failed call. A call that times out closes the connection:
the replies still owed on it can no longer be matched to their calls. Errors are `OSError`s
(`ConnectionError`, `TimeoutError`, `Unavailable` for READONLY, OOM and LOADING replies) when
Redis cannot serve us, and `ReplyError` for any other error reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

Arg = str | int | float | bytes


class Unavailable(OSError):
    """Redis answered that it cannot serve writes now (a replica, out of memory, loading)."""


class ReplyError(Exception):
    """An error reply that is not about availability: a fault in the command or script."""


_UNAVAILABLE_REPLIES = (b"READONLY", b"OOM", b"LOADING", b"MASTERDOWN", b"BUSY")


def _encode(args: Sequence[Arg]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def _parse(buffer: bytearray, at: int) -> tuple[Any, int]:
    """One reply starting at `at`: (value, where the next starts). Bulk strings come back as str."""
    end = buffer.find(b"\r\n", at)
    if end < 0:
        raise _Incomplete
    kind = buffer[at]
    if kind == 0x24:  # $ bulk string
        length = int(buffer[at + 1 : end])
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        if len(buffer) < stop + 2:
            raise _Incomplete
        return buffer[end + 2 : stop].decode(), stop + 2
    if kind == 0x3A:  # : integer
        return int(buffer[at + 1 : end]), end + 2
    if kind == 0x2B:  # + simple string
        return buffer[at + 1 : end].decode(), end + 2
    if kind == 0x2D:  # - error
        text = bytes(buffer[at + 1 : end])
        error: Exception = (
            Unavailable(text.decode()) if text.startswith(_UNAVAILABLE_REPLIES) else ReplyError(text.decode())
        )
        return error, end + 2
    if kind == 0x2A:  # * array
        count = int(buffer[at + 1 : end])
        if count < 0:
            return None, end + 2
        items = []
        at = end + 2
        for _ in range(count):
            item, at = _parse(buffer, at)
            items.append(item)
        return items, at
    raise ReplyError(f"unexpected reply type {chr(kind)!r}")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (reply, deadline)
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        waiting = self._waiting
        try:
            while at < len(buffer) and waiting:
                value, at = _parse(buffer, at)
                future, _ = waiting.popleft()
                if future.done():  # its caller gave up on it
                    continue
                if isinstance(value, Exception):
                    future.set_exception(value)
                else:
                    future.set_result(value)
        except _Incomplete:
            pass
        del buffer[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("Redis closed the connection")
        self._fail(self.lost)

    def _fail(self, error: Exception) -> None:
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"Redis connection lost: {type(error).__name__}"))

    def send(self, command: bytes, deadline: float) -> asyncio.Future[Any]:
        assert self._transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((future, deadline))
        self._transport.write(command)
        return future

    def overdue(self, now: float) -> bool:
        return bool(self._waiting) and self._waiting[0][1] <= now

    @property
    def busy(self) -> bool:
        return bool(self._waiting)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Redis:
    def __init__(self, url: str, timeout: float = 1.0, connect_timeout: float = 1.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("a Redis URL starts with redis:// or rediss://")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._tls = parts.scheme == "rediss"
        self._db = int(parts.path.strip("/") or 0)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def call(self, *args: Arg) -> Any:
        """One command; one more try on a new connection if this one failed under it."""
        try:
            return await self._call(_encode(args))
        except (ConnectionError, TimeoutError):
            return await self._call(_encode(args))

    async def _call(self, command: bytes) -> Any:
        connection = self._connection
        if connection is None or connection.lost is not None:
            connection = await self._connect()
        reply = connection.send(command, time.monotonic() + self._timeout)
        if self._watchdog is None:
            self._watch()
        return await reply

    def _watch(self) -> None:
        """While calls wait, check twice per timeout that the oldest is not overdue; if it is,
        Redis stopped answering: drop the connection, failing every call waiting on it."""
        self._watchdog = None
        connection = self._connection
        if connection is None or not connection.busy:
            return
        if connection.overdue(time.monotonic()):
            connection._fail(TimeoutError())
            connection.lost = TimeoutError("Redis did not answer in time")
            connection.close()
            self._connection = None
            return
        self._watchdog = asyncio.get_running_loop().call_later(self._timeout / 2, self._watch)

    async def _connect(self) -> _Connection:
        if self._connecting is not None:  # another call is connecting: share its connection
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            connection = await asyncio.wait_for(self._open(), self._connect_timeout)
        except BaseException as exc:
            error = exc if isinstance(exc, OSError) else ConnectionError(f"cannot connect to Redis: {exc!r}")
            self._connecting.set_exception(error)  # the calls sharing this attempt fail with it
            self._connecting.exception()  # retrieved: a failed connect with no other waiter is not an error to log
            self._connecting = None
            if isinstance(exc, asyncio.CancelledError):
                raise  # this call was cancelled: that, not a connection error, is what it raises
            raise error from exc
        self._connection = connection
        self._connecting.set_result(connection)
        self._connecting = None
        return connection

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self._tls else None
        _, connection = await loop.create_connection(_Connection, self._host, self._port, ssl=context)
        deadline = time.monotonic() + self._timeout
        hello: list[asyncio.Future[Any]] = []
        if self._password is not None:
            auth = ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
            hello.append(connection.send(_encode(auth), deadline))
        if self._db:
            hello.append(connection.send(_encode(("SELECT", self._db)), deadline))
        try:
            for reply in hello:
                await reply
        except BaseException:
            connection.close()
            raise
        return connection

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class Script:
    """A Lua script called by its SHA-1, sent whole once when Redis does not know it (first use,
    or after a restart or SCRIPT FLUSH)."""

    def __init__(self, redis: Redis, source: str) -> None:
        self._redis = redis
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, args: Sequence[Arg]) -> Any:
        try:
            return await self._redis.call("EVALSHA", self._sha, 0, *args)
        except ReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            return await self._redis.call("EVAL", self._source, 0, *args)
