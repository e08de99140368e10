"""Fixtures for the Redis index tests: one Redis or a 3-master cluster, key prefixes, clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.support.redis_cluster import RedisClusterServers

SyncClient = redis.Redis | redis.RedisCluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster of our own processes, shared by the tests that only use it."""
    with RedisClusterServers(3) as cluster:
        yield cluster


@pytest.fixture(params=["single", "cluster"])
def index_url(request: pytest.FixtureRequest) -> str:
    """The index's Redis URL: one server, then (the same tests again) the cluster."""
    if request.param == "single":
        return str(request.getfixturevalue("redis_url"))
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    cluster.wait_ok()
    return cluster.url


def sync_client(url: str) -> SyncClient:
    """A plain synchronous client for the same Redis or cluster."""
    if url.startswith("redis+cluster://"):
        host, _, port = url.removeprefix("redis+cluster://").split(",")[0].rpartition(":")
        return redis.RedisCluster(host=host, port=int(port), socket_timeout=5)
    return redis.Redis.from_url(url, socket_timeout=5)


@pytest.fixture
def key_prefix(index_url: str) -> Iterator[str]:
    """A key prefix unique to the test; its keys are removed afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = sync_client(index_url)
    try:
        pipe = client.pipeline()  # on a cluster, split by node: keys live in many slots
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            pipe.unlink(key)
        pipe.execute()
    finally:
        client.close()


@pytest.fixture
def sync_redis(index_url: str) -> Iterator[SyncClient]:
    """A plain client for inspecting keys."""
    client = sync_client(index_url)
    yield client
    client.close()
