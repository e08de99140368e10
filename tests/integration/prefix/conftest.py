"""Fixtures for the Redis index tests: unique key prefixes and a plain client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to the test; its keys are removed afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])
    finally:
        client.close()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client for inspecting keys."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()
