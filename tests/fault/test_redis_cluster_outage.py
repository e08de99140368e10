"""A Redis Cluster master killed mid-traffic: the index degrades, requests all succeed, and the
index recovers by itself once the master is back."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from redis.cluster import key_slot

from gateway.prefix.hashing import prefix_hashes
from tests.fault.test_redis_outage import (
    SYSTEM,
    ask,
    assert_affinity_returns,
    degraded_gauge,
    redis_gateway,
    serve_until,
)
from tests.support.harness import MODEL
from tests.support.redis_cluster import RedisClusterServers


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterServers]:
    """A cluster of this test's own, to kill a master of (failure detected after 1 s)."""
    with RedisClusterServers(3, node_timeout_ms=1000) as cluster:
        yield cluster


def owner_of(cluster: RedisClusterServers, key: bytes) -> int:
    """Index (in ``cluster.nodes``) of the master that serves ``key``'s slot."""
    client = cluster.client()
    try:
        node = client.nodes_manager.get_node_from_slot(key_slot(key))
        return next(i for i, n in enumerate(cluster.nodes) if n.port == int(node.port))
    finally:
        client.close()


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


@pytest.mark.parametrize("victim", ["chain_owner", "other_master"])
def test_killed_master_degrades_the_index_and_its_return_recovers_it(
    sim_fleet, gateway, own_cluster, unique_prefix, victim
):
    gw = redis_gateway(sim_fleet, gateway, own_cluster.url, unique_prefix)
    index = gw.deps.index
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        if "gateway_index_lookups_total" not in client.get("/metrics").text:
            gw.deps.metrics.watch_index(index)  # until the gateway wires it itself
        # Every request of this test shares the system prompt: one chain head, one slot.
        body = {
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "q"}]
        }
        head = prefix_hashes(body, "chat", MODEL).hashes[0]
        owner = owner_of(own_cluster, f"{unique_prefix}{{{head:016x}}}".encode())
        killed = owner if victim == "chain_owner" else (owner + 1) % 3

        holder = ask(client, 0)
        assert gw.call(gw.deps.tasks.settle())
        assert ask(client, 1) == holder  # affinity through the cluster works
        assert degraded_gauge(client) == 0.0

        own_cluster.nodes[killed].stop()
        n = serve_until(client, 2, lambda: not index.healthy)
        assert degraded_gauge(client) == 1.0
        n = serve_until(client, n, lambda: True)  # still serving while degraded
        failures = metric(client, "gateway_index_error_replies_total") + metric(
            client, "gateway_index_timeouts_total"
        )
        assert failures + metric(client, "gateway_index_lookup_errors_total") > 0
        assert metric(client, "gateway_index_degraded_transitions_total") >= 1

        own_cluster.nodes[killed].start()  # same port and node id; its data is gone
        own_cluster.wait_ok()
        serve_until(client, n, lambda: index.healthy)
        assert degraded_gauge(client) == 0.0
        assert metric(client, "gateway_index_recoveries_total") >= 1
        assert_affinity_returns(client, gw)
