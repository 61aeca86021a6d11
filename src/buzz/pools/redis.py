"""The hold board of several processes: one Redis hash of holds, and a channel that announces each
change, so every process learns of a hold within a round trip rather than at its next poll.

A hold is written by a script that keeps whichever deadline is later and announces the result in
the same step, so two processes that hold one credential at once agree on the outcome. A process
whose subscription drops reads the whole hash when it is back, so no hold set meanwhile is missed;
a lift it missed is made good by its own probe of the credential, or by the hold's end.
Spoken through redis-py: this is not the request path (a hold is a rare event), and pub/sub needs
a connection of its own that the limiter's small client does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from buzz.pools.base import CAUSES, Hold, Holds, OnClear, OnHold

log = logging.getLogger("buzz.pools")

_KEY = "buzz:holds"
# Pub/sub channels are shared by every database of a Redis: the database number keeps deployments
# that share one Redis (each in its own database) apart.
_CHANNEL = "buzz:holds:{db}"
_RETRY = (0.5, 1.0, 2.0, 5.0)  # seconds between attempts to subscribe again
_IDLE = 30.0  # seconds of silence after which the subscription is pinged
# What "Redis cannot serve us now" looks like; any other error reply is a fault and is raised as is.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)

# KEYS: the hash. ARGV: field, until, cause, since, channel, provider, credential.
_PUT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local deadline = tonumber(string.match(current, '^([^|]+)'))
  if deadline and deadline >= tonumber(ARGV[2]) then return current end
end
local record = ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4]
redis.call('HSET', KEYS[1], ARGV[1], record)
redis.call('PUBLISH', ARGV[5], 'h|' .. ARGV[6] .. '|' .. ARGV[7] .. '|' .. record)
return record
"""

# KEYS: the hash. ARGV: field, set_before, channel, provider, credential.
_CLEAR = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local since = tonumber(string.match(current, '|([^|]+)$'))
if since and since > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], 'c|' .. ARGV[4] .. '|' .. ARGV[5] .. '|' .. ARGV[2])
return 1
"""


class RedisBoard:
    def __init__(self, url: str, clock: Callable[[], float] = time.time, timeout: float = 1.0) -> None:
        self._clock = clock
        self._client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        # The subscription waits for messages as long as it takes: no read deadline, but a ping
        # after each quiet spell (see `_listen`).
        self._listener = Redis.from_url(url, socket_connect_timeout=timeout, socket_keepalive=True)
        db = self._client.connection_pool.connection_kwargs.get("db", 0)
        self._channel = _CHANNEL.format(db=db)
        self._put = self._client.register_script(_PUT)
        self._clear = self._client.register_script(_CLEAR)
        self._task: asyncio.Task[None] | None = None

    async def put(self, provider: str, credential: str, hold: Hold) -> Hold:
        args = [_field(provider, credential), repr(hold.until), hold.cause, repr(hold.since)]
        record = await self._call(self._put, [*args, self._channel, provider, credential])
        return _record(_text(record)) or hold

    async def clear(self, provider: str, credential: str, set_before: float) -> bool:
        field = _field(provider, credential)
        return bool(await self._call(self._clear, [field, repr(set_before), self._channel, provider, credential]))

    async def read(self) -> Holds:
        try:
            entries = await self._client.hgetall(_KEY)
        except _UNAVAILABLE as exc:
            raise OSError(f"Redis: {type(exc).__name__}") from exc
        now = self._clock()
        holds: Holds = {}
        for field, record in cast(dict[bytes, bytes], entries).items():
            provider, _, credential = _text(field).partition("\t")
            hold = _record(_text(record))
            if hold is not None and hold.until > now:
                holds[(provider, credential)] = hold
        return holds

    async def start(self, on_hold: OnHold, on_clear: OnClear) -> None:
        # Never fails: a Redis that is away at start is subscribed to when it comes back.
        self._task = asyncio.create_task(self._listen(on_hold, on_clear), name="buzz-credential-holds")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a shutdown goes on regardless
                await self._task
        await self._client.aclose()
        await self._listener.aclose()

    async def _call(self, script: Any, args: list[str]) -> Any:
        try:
            return await script(keys=[_KEY], args=args)
        except _UNAVAILABLE as exc:
            raise OSError(f"Redis: {type(exc).__name__}") from exc

    async def _listen(self, on_hold: OnHold, on_clear: OnClear) -> None:
        """Subscribes, reads every hold in force (what was set before, or while it was away), then
        applies each announced change; after a failure, starts over with a growing pause."""
        failures = 0
        while True:
            pubsub: Any = self._listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                for (provider, credential), hold in (await self.read()).items():
                    on_hold(provider, credential, hold)
                if failures:
                    log.info("credential holds: subscribed again")
                failures = 0
                while True:
                    message = await pubsub.get_message(timeout=_IDLE)
                    if message is None:
                        # Quiet for a while: a connection that died without a word (a crashed
                        # host, a proxy's idle timeout) is found out here, not never.
                        await pubsub.ping()
                    elif message.get("type") == "message":
                        _deliver(_text(message.get("data", b"")), on_hold, on_clear)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it was, hearing the others must go on
                if not failures:
                    log.warning("credential holds: no subscription (%s); retrying", type(exc).__name__)
                failures += 1
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(_RETRY[min(failures, len(_RETRY)) - 1])


def _deliver(message: str, on_hold: OnHold, on_clear: OnClear) -> None:
    kind, _, rest = message.partition("|")
    if kind == "h":
        provider, credential, record = rest.split("|", 2) if rest.count("|") >= 2 else ("", "", "")
        hold = _record(record)
        if hold is not None:
            on_hold(provider, credential, hold)
    elif kind == "c":
        parts = rest.split("|")
        if len(parts) == 3:
            with contextlib.suppress(ValueError):
                on_clear(parts[0], parts[1], float(parts[2]))


def _field(provider: str, credential: str) -> str:
    return f"{provider}\t{credential}"


def _record(record: str) -> Hold | None:
    """`until|cause|since`, as the scripts write it; None for anything else."""
    parts = record.split("|")
    if len(parts) != 3 or parts[1] not in CAUSES:
        return None
    try:
        return Hold(float(parts[0]), parts[1], float(parts[2]))
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
