"""Replicas sharing a Redis index see each other's load on a backend (the load exchange)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.harness import MODEL, GatewayHandle
from tests.support.load_exchange import exchange_on, fleet_of

# Slow enough that a cold prompt of a few thousand tokens takes about a second to prefill.
PREFILL_TPS = 4000.0
# Engine gauges scraped once at start and then not for a minute: only the exchange can tell.
HEALTH = {"interval_s": 0.2, "load_interval_s": 60.0}


def body(tag: str) -> dict[str, Any]:
    prompt = f"[{tag}] " + "a long document nobody has sent before. " * 400
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 2,
    }


def wait_for(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def exchanged_in_flight(replica: GatewayHandle, backend_id: str) -> float:
    for backend in replica.deps.fleet.backends:
        if backend.id == backend_id and backend.state.exchanged is not None:
            return backend.state.exchanged.in_flight
    return 0.0


def busy_backend(replica: GatewayHandle) -> str | None:
    busy = [b.id for b in replica.deps.fleet.backends if b.state.in_flight > 0]
    return busy[0] if busy else None


def replicas(sim_fleet, gateway, redis_url, prefix, exchange_ms):
    fleet = sim_fleet(2, time_scale=1.0, prefill_tokens_per_s=PREFILL_TPS)
    backends = fleet.backend_settings(prefill_tokens_per_s=PREFILL_TPS)
    index = {
        "kind": "redis",
        "redis_url": redis_url,
        "key_prefix": prefix,
        "load_exchange_ms": exchange_ms,
    }
    return (
        gateway(backends, index=index, health=HEALTH),
        gateway(backends, index=index, health=HEALTH),
    )


def send_past_a_busy_backend(replica_a: GatewayHandle, replica_b: GatewayHandle, tag: str) -> None:
    slow = threading.Thread(
        target=httpx.post,
        args=(replica_a.url + "/v1/chat/completions",),
        kwargs={"json": body(f"a-{tag}"), "timeout": 30},
    )
    slow.start()
    try:
        assert wait_for(lambda: busy_backend(replica_a) is not None)
        taken = busy_backend(replica_a)
        assert taken is not None
        # B's own books are empty: what it knows of A's prefill it learned from Redis.
        assert wait_for(lambda: exchanged_in_flight(replica_b, taken) >= 1), (
            "replica B never heard of replica A's request"
        )
        r = httpx.post(replica_b.url + "/v1/chat/completions", json=body(f"b-{tag}"), timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["x-gateway-backend"] != taken
    finally:
        slow.join()
    assert wait_for(lambda: exchanged_in_flight(replica_b, taken) == 0)


def test_a_replica_sends_a_cold_prompt_past_the_backend_another_replica_is_prefilling_on(
    sim_fleet, gateway, redis_url, unique_prefix
):
    replica_a, replica_b = replicas(sim_fleet, gateway, redis_url, unique_prefix, 20.0)
    for round_ in range(3):
        send_past_a_busy_backend(replica_a, replica_b, str(round_))


def test_without_the_exchange_the_other_replicas_load_is_unseen(
    sim_fleet, gateway, redis_url, unique_prefix
):
    replica_a, replica_b = replicas(sim_fleet, gateway, redis_url, unique_prefix, 0.0)
    assert replica_a.deps.exchange is None
    slow = threading.Thread(
        target=httpx.post,
        args=(replica_a.url + "/v1/chat/completions",),
        kwargs={"json": body("off"), "timeout": 30},
    )
    slow.start()
    try:
        assert wait_for(lambda: busy_backend(replica_a) is not None)
        time.sleep(0.1)
        assert all(b.state.exchanged is None for b in replica_b.deps.fleet.backends)
    finally:
        slow.join()


def test_redis_trouble_leaves_the_engine_gauges_and_never_raises(redis_server, unique_prefix):
    reported: list[tuple[int, bool]] = []

    async def scenario() -> None:
        fleet = fleet_of("x")
        exchange = exchange_on(
            redis_server.url,
            fleet,
            (unique_prefix + "replica-load").encode(),
            "a",
            on_exchange=lambda n, ok: reported.append((n, ok)),
        )
        try:
            assert await exchange.exchange()
            assert fleet.backends[0].state.exchanged is not None
            redis_server.stop()
            assert not await exchange.exchange()
            assert fleet.backends[0].state.exchanged is None
        finally:
            await exchange.close()

    asyncio.run(scenario())
    assert reported[0] == (0, True)
    assert reported[-1] == (0, False)
