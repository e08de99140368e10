"""Two gateway replicas sharing one Redis index route a prefix to the same backend."""

from __future__ import annotations

import httpx

from gateway.prefix.hashing import prefix_hashes
from gateway.prefix.redis import RedisPrefixIndex
from tests.support.harness import MODEL

SYSTEM = "Replicas must agree on where this long system prompt lives. " * 40


def ask(url: str, system: str, question: str) -> str:
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": 2,
    }
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.headers["x-gateway-backend"]


def test_prefix_learned_through_one_replica_is_followed_by_the_other(
    sim_fleet, gateway, redis_url, unique_prefix
):
    fleet = sim_fleet(4)
    index = {"kind": "redis", "redis_url": redis_url, "key_prefix": unique_prefix}
    replica_a = gateway(fleet.backend_settings(), index=index)
    replica_b = gateway(fleet.backend_settings(), index=index)
    for n in range(4):
        system = f"[tenant {n}] " + SYSTEM
        learned = ask(replica_a.url, system, "first question")
        # Recording is off the request path; wait for it instead of guessing a delay.
        assert replica_a.call(replica_a.deps.tasks.settle())
        assert ask(replica_b.url, system, "second question") == learned
        assert replica_b.call(replica_b.deps.tasks.settle())
        assert ask(replica_a.url, system, "third question") == learned


def test_forget_by_one_replica_applies_to_both(sim_fleet, gateway, redis_url, unique_prefix):
    fleet = sim_fleet(2)
    index = {"kind": "redis", "redis_url": redis_url, "key_prefix": unique_prefix}
    replica_a = gateway(fleet.backend_settings(), index=index)
    replica_b = gateway(fleet.backend_settings(), index=index)
    learned = ask(replica_a.url, SYSTEM, "q")
    assert replica_a.call(replica_a.deps.tasks.settle())
    body = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "q"}]}
    hashes = prefix_hashes(body, "chat", MODEL).hashes
    assert replica_b.call(replica_b.deps.index.lookup(MODEL, hashes)).get(learned, 0) > 0
    replica_a.call(replica_a.deps.index.forget(learned))
    # Replicas pick up shared epochs on their periodic sync; run it now instead of waiting.
    index_b = replica_b.deps.index
    assert isinstance(index_b, RedisPrefixIndex)
    assert replica_b.call(index_b.sync_shared_state())
    assert replica_b.call(replica_b.deps.index.lookup(MODEL, hashes)).get(learned, 0) == 0
