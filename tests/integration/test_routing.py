"""Prefix-aware routing through the gateway, judged by the backends' own cache accounting."""

from __future__ import annotations

import httpx

from tests.support.harness import MODEL

SYSTEM = "You are a meticulous assistant. " * 64  # about 2 KiB: eight 256-byte blocks


def chat(question: str, **extra: object) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
        ],
        "max_tokens": 2,
        **extra,
    }


def post(url: str, body: dict[str, object], **headers: str) -> httpx.Response:
    r = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r


def test_shared_prefix_follows_the_backend_that_holds_it(sim_fleet, gateway):
    fleet = sim_fleet(4)
    gw = gateway(fleet.backend_settings(), routing={"policy": "profile"})
    first = post(gw.url, chat("What is a KV cache?")).headers["x-gateway-backend"]
    for i in range(6):
        r = post(gw.url, chat(f"Question number {i}?"))
        assert r.headers["x-gateway-backend"] == first
    holder = next(b for b in fleet.backends if b.backend_id == first)
    stats = holder.stats
    assert stats.prefix_cache_hits_tokens > 0.8 * 6 * len(SYSTEM) / 4
    others = [b for b in fleet.backends if b.backend_id != first]
    assert all(b.stats.requests_total == 0 for b in others)


def test_round_robin_ignores_the_prefix(sim_fleet, gateway):
    fleet = sim_fleet(4)
    gw = gateway(fleet.backend_settings(), routing={"policy": "round_robin"})
    served = {post(gw.url, chat(f"q{i}")).headers["x-gateway-backend"] for i in range(8)}
    assert len(served) == 4


def test_explain_header_lists_every_candidate_with_scores(sim_fleet, gateway):
    fleet = sim_fleet(3)
    gw = gateway(fleet.backend_settings(), routing={"policy": "profile", "explain_header": True})
    post(gw.url, chat("warm up"))
    r = post(gw.url, chat("again"), **{"x-gateway-explain": "1"})
    route = r.headers["x-gateway-route"]
    assert route.startswith("profile:default ")
    ranked = route.split(" ")[1:]
    assert len(ranked) == 3
    best = ranked[0]
    assert best.startswith(r.headers["x-gateway-backend"] + ":")
    assert "cost=1.000" in best  # the backend holding the prefix is the fastest to first token
    assert all("cost=" in entry and "load=" in entry for entry in ranked)


def test_reported_cache_loss_corrects_the_index(sim_fleet, gateway):
    fleet = sim_fleet(2, "sglang")  # SGLang reports cached_tokens on every usage block
    gw = gateway(fleet.backend_settings(reports_cached_tokens=True), routing={"policy": "profile"})
    body = chat("first", stream=True, stream_options={"include_usage": True})
    holder_id = post(gw.url, body).headers["x-gateway-backend"]
    holder = next(b for b in fleet.backends if b.backend_id == holder_id)
    holder.restart()  # the backend loses its cache; the gateway's index does not know yet
    post(gw.url, body)
    metrics = httpx.get(gw.url + "/metrics").text
    assert f'gateway_index_corrections_total{{backend="{holder_id}"}} 1.0' in metrics
    reported = f'gateway_cached_tokens_reported_total{{backend="{holder_id}"}} 0.0'
    assert reported in metrics
    # The backend keeps blocks for less time than believed: its entries now age out sooner.
    assert gw.deps.index.staleness.trust(holder_id) < 1.0
    other = next(b.backend_id for b in fleet.backends if b.backend_id != holder_id)
    assert gw.deps.index.staleness.trust(other) == 1.0
