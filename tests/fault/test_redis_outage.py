"""Redis trouble degrades routing, never requests: stopped or hung Redis mid-traffic, then back."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.support.harness import MODEL

SYSTEM = "A system prompt long enough to span several prefix blocks of the index. " * 20
# Each phase ends as soon as its condition holds; these only bound a phase that never does.
MAX_REQUESTS = 5000
MAX_SECONDS = 30.0


def ask(client: httpx.Client, i: int, system: str = "") -> str:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": system + SYSTEM},
            {"role": "user", "content": f"q{i}"},
        ],
        "max_tokens": 2,
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.headers["x-gateway-backend"]


def degraded_gauge(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("gateway_index_degraded "):
            return float(line.split()[1])
    raise AssertionError("gateway_index_degraded missing from /metrics")


def serve_until(client: httpx.Client, start: int, done) -> int:
    """Send requests (every one must succeed) until `done()` holds; bounded."""
    deadline = time.monotonic() + MAX_SECONDS
    for i in range(start, start + MAX_REQUESTS):
        ask(client, i)
        if done():
            return i + 1
        if time.monotonic() > deadline:
            break
    raise AssertionError("condition not reached within the bound")


def assert_affinity_returns(client: httpx.Client, gw) -> None:
    """Routing by prefix works again: a prefix learned now is followed by the next request.

    (A lookup may still time out while Redis works off what queued up during the trouble, so
    this is a bounded search for affinity, not a single shot.)
    """
    for i in range(10_000, 10_000 + 2 * 20, 2):
        learned = ask(client, i, f"fresh prefix {i} ")
        assert gw.call(gw.deps.tasks.settle())
        if ask(client, i + 1, f"fresh prefix {i} ") == learned:
            return
    raise AssertionError("prefix affinity did not come back after Redis returned")


def redis_gateway(sim_fleet: Any, gateway: Any, redis_url: str, key_prefix: str) -> Any:
    """A gateway on the Redis index at `redis_url`, with short timeouts, before 3 sim backends."""
    fleet = sim_fleet(3)
    index = {
        "kind": "redis",
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "lookup_timeout_ms": 50,
        "record_timeout_ms": 100,
    }
    return gateway(fleet.backend_settings(), index=index)


@pytest.mark.parametrize("trouble", ["stop", "pause"])
def test_requests_succeed_through_a_redis_outage_and_routing_recovers(
    sim_fleet, gateway, redis_server, unique_prefix, trouble
):
    gw = redis_gateway(sim_fleet, gateway, redis_server.url, unique_prefix)
    index = gw.deps.index
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        holder = ask(client, 0)
        assert gw.call(gw.deps.tasks.settle())
        assert ask(client, 1) == holder  # affinity through Redis works
        assert degraded_gauge(client) == 0.0

        if trouble == "stop":
            redis_server.stop()
        else:
            redis_server.pause()  # hung: accepts nothing, answers nothing
        n = serve_until(client, 2, lambda: not index.healthy)
        assert degraded_gauge(client) == 1.0
        n = serve_until(client, n, lambda: True)  # still serving while degraded

        if trouble == "stop":
            redis_server.start()
        else:
            redis_server.resume()
        serve_until(client, n, lambda: index.healthy)
        assert degraded_gauge(client) == 0.0
        assert gw.call(gw.deps.tasks.settle())
        assert_affinity_returns(client, gw)
