"""The limiter's Redis client against real Redis servers: every reply type, replies split across
reads, many calls pipelined on one connection, a password and a database from the URL, a script
Redis forgot, and a Redis that stops answering."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from limits_support import REDIS_URL

from buzz.limits.resp import Redis, ReplyError, Script
from support import RedisServer, free_port, wait_until


def test_every_reply_type_and_a_reply_split_across_reads(redis_prefix: str) -> None:
    async def scenario() -> None:
        client = Redis(REDIS_URL)
        key = f"{redis_prefix}x"
        try:
            assert await client.call("PING") == "PONG"  # simple string
            assert await client.call("GET", key) is None  # nil
            assert await client.call("INCRBY", key, 41) == 41  # integer
            big = "é" * 600_000  # 1.2 MB: many reads before the reply is whole
            assert await client.call("SET", key, big) == "OK"
            assert await client.call("GET", key) == big
            nested = "return {1, 'two', {3, 'four'}, false}"
            assert await client.call("EVAL", nested, 0) == [1, "two", [3, "four"], None]
            with pytest.raises(ReplyError, match="ERR"):
                await client.call("NOSUCHCOMMAND")
            assert await client.call("PING") == "PONG"  # the connection is still in step
        finally:
            await client.close()

    asyncio.run(scenario())


def test_calls_pipelined_on_one_connection_each_get_their_own_reply(redis_prefix: str) -> None:
    async def scenario() -> None:
        client = Redis(REDIS_URL)
        key = f"{redis_prefix}n"
        try:
            replies = await asyncio.gather(*(client.call("INCR", key) for _ in range(500)))
            assert sorted(replies) == list(range(1, 501))
            echoed = await asyncio.gather(*(client.call("ECHO", f"call {i}") for i in range(200)))
            assert echoed == [f"call {i}" for i in range(200)]
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_script_redis_forgot_is_sent_whole_again(redis_prefix: str) -> None:
    async def scenario() -> None:
        client = Redis(REDIS_URL)
        script = Script(client, f"return ARGV[1] .. '{uuid.uuid4().hex}'")
        try:
            first = await script(["a"])
            await client.call("SCRIPT", "FLUSH")
            assert await script(["a"]) == first
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_password_and_a_database_from_the_url(tmp_path: Path) -> None:
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [*command, "--requirepass", "s3cret", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def scenario() -> None:
            wrong = Redis(f"redis://:nope@127.0.0.1:{port}/0")
            with pytest.raises(ConnectionError):
                await wrong.call("PING")
            await wrong.close()
            client = Redis(f"redis://:s3cret@127.0.0.1:{port}/5")
            try:
                assert await client.call("SET", "k", "in db 5") == "OK"
                assert await client.call("CLIENT", "INFO") is not None
                other = Redis(f"redis://default:s3cret@127.0.0.1:{port}/0")
                assert await other.call("GET", "k") is None  # another database
                await other.close()
                assert await client.call("GET", "k") == "in db 5"
            finally:
                await client.close()

        assert wait_until(lambda: _answers(port), timeout=20)
        asyncio.run(scenario())
    finally:
        server.terminate()
        server.wait(10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def test_a_redis_that_stops_answering_fails_the_call_and_a_new_connection_serves_the_next(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "redis") as server:

        async def scenario() -> None:
            client = Redis(server.url, timeout=0.2, connect_timeout=0.2)
            try:
                assert await client.call("PING") == "PONG"
                server.pause()
                with pytest.raises(OSError):  # a timeout, or the connection it dropped
                    await client.call("PING")
                server.resume()
                assert await client.call("PING") == "PONG"
            finally:
                await client.close()

        asyncio.run(scenario())
