"""Redis answering with errors (OOM when full, READONLY as a replica) mid-traffic: the index
degrades like on an outage, requests all succeed, and it recovers once Redis accepts writes."""

from __future__ import annotations

import httpx
import pytest
import redis

from tests.fault.test_redis_cluster_outage import metric
from tests.fault.test_redis_outage import (
    ask,
    assert_affinity_returns,
    degraded_gauge,
    redis_gateway,
    serve_until,
)
from tests.support.redis_cluster import free_ports


@pytest.mark.parametrize("refusal", ["oom", "readonly"])
def test_error_replies_degrade_routing_never_requests(
    sim_fleet, gateway, redis_server, unique_prefix, refusal
):
    gw = redis_gateway(sim_fleet, gateway, redis_server.url, unique_prefix)
    index = gw.deps.index
    admin = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        if "gateway_index_lookups_total" not in client.get("/metrics").text:
            gw.deps.metrics.watch_index(index)  # until the gateway wires it itself
        holder = ask(client, 0)
        assert gw.call(gw.deps.tasks.settle())
        assert ask(client, 1) == holder
        assert degraded_gauge(client) == 0.0

        if refusal == "oom":
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")
        else:
            admin.replicaof("127.0.0.1", free_ports(1)[0])  # a master that never answers
        try:
            n = serve_until(client, 2, lambda: not index.healthy)
            assert degraded_gauge(client) == 1.0
            assert metric(client, "gateway_index_error_replies_total") >= 1
            n = serve_until(client, n, lambda: True)  # still serving while degraded
        finally:
            if refusal == "oom":
                admin.config_set("maxmemory", "0")
            else:
                admin.replicaof("NO", "ONE")
            admin.close()
        serve_until(client, n, lambda: index.healthy)
        assert degraded_gauge(client) == 0.0
        assert metric(client, "gateway_index_recoveries_total") == 1
        assert_affinity_returns(client, gw)
