"""Gateways over a real Redis Cluster: replicas share it, and a single-node URL pointed at a
cluster node (every other slot answers MOVED) degrades the index instead of passing for empty."""

from __future__ import annotations

import httpx
from redis.cluster import key_slot

from gateway.prefix.hashing import prefix_hashes
from tests.fault.test_redis_outage import SYSTEM, ask, degraded_gauge
from tests.integration.test_replicas import (
    test_forget_by_one_replica_applies_to_both as forget_applies_to_both,
)
from tests.integration.test_replicas import (
    test_prefix_learned_through_one_replica_is_followed_by_the_other as learned_is_followed,
)
from tests.support.harness import MODEL
from tests.support.redis_cluster import RedisClusterServers


def test_replicas_follow_a_prefix_learned_by_another_through_a_cluster(
    sim_fleet, gateway, redis_cluster: RedisClusterServers, unique_prefix
):
    redis_cluster.wait_ok()
    learned_is_followed(sim_fleet, gateway, redis_cluster.url, unique_prefix)


def test_forget_by_one_replica_applies_to_both_through_a_cluster(
    sim_fleet, gateway, redis_cluster: RedisClusterServers, unique_prefix
):
    redis_cluster.wait_ok()
    forget_applies_to_both(sim_fleet, gateway, redis_cluster.url, unique_prefix)


def system_prompt_on_another_node(cluster: RedisClusterServers, key_prefix: str) -> str:
    """A system prompt whose chain lives in a slot node 0 does not serve (bounded search)."""
    client = cluster.client()
    try:
        for n in range(200):
            system = f"[tenant {n}] "
            body = {
                "messages": [
                    {"role": "system", "content": system + SYSTEM},
                    {"role": "user", "content": "q"},
                ]
            }
            head = prefix_hashes(body, "chat", MODEL).hashes[0]
            slot = key_slot(f"{key_prefix}{{{head:016x}}}".encode())
            if int(client.nodes_manager.get_node_from_slot(slot).port) != cluster.nodes[0].port:
                return system
    finally:
        client.close()
    raise AssertionError("no prompt found outside node 0's slots")


def test_single_node_url_on_a_cluster_node_degrades_on_moved(
    sim_fleet, gateway, redis_cluster: RedisClusterServers, unique_prefix
):
    redis_cluster.wait_ok()
    fleet = sim_fleet(2)
    node = redis_cluster.nodes[0]
    gw = gateway(
        fleet.backend_settings(),
        index={"kind": "redis", "redis_url": node.url, "key_prefix": unique_prefix},
    )
    index = gw.deps.index
    system = system_prompt_on_another_node(redis_cluster, unique_prefix)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for i in range(50):  # every lookup and record of this chain is answered MOVED
            ask(client, i, system)  # and succeeds
            if not index.healthy:
                break
        assert not index.healthy
        assert degraded_gauge(client) == 1.0
        assert index.counters.error_replies >= 1
        for i in range(50, 60):  # requests go on, routed by load
            ask(client, i, system)
        assert not index.healthy  # a misconfiguration: it stays degraded, and says so
