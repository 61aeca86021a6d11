"""Fixtures for the limiter contract: a backend per run, and a clean Redis key space per test.

Redis is a real server (`BUZZ_TEST_REDIS_URL`, default database 1 of 127.0.0.1:6379); every test
gets its own random key prefix, and everything under it is deleted afterwards. Tests that stop or
break Redis run their own server instead (`support.RedisServer`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from limits_support import REDIS_URL, Backend


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as error:
        pytest.fail(f"the limiter contract needs a real Redis at {REDIS_URL} (.ci/run starts one): {error}")
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"buzz-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend("memory", "")
    return Backend("redis", request.getfixturevalue("redis_prefix"))
