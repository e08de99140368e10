"""The admin API on a running gateway: backends with their live state, and routing explained
without sending anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.admission.keys import hash_key
from tests.support.harness import GatewayHandle, SimFleetHandle

KEY = "admin-s3cret"
ADMIN = {"authorization": f"Bearer {KEY}"}
SYSTEM = "You are a careful assistant who answers in full sentences. " * 40  # ~2.4 KB


def chat(model: str, user: str, system: str = SYSTEM, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return {"model": model, "messages": messages, "max_tokens": 4, **extra}


def backends(gw: GatewayHandle) -> dict[str, dict[str, Any]]:
    r = httpx.get(gw.url + "/admin/backends", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    return {b["id"]: b for b in r.json()["backends"]}


def explain(gw: GatewayHandle, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/admin/explain", json=body, headers={**ADMIN, **headers}, timeout=10
    )


def requests_seen(fleet: SimFleetHandle) -> list[int]:
    return [b.stats.requests_total for b in fleet.backends]


def decisions_counted(gw: GatewayHandle) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_routing_decisions_total{")
    )


def test_admin_routes_need_the_admin_key(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(1)
    closed = gateway(fleet.backend_settings())
    assert httpx.get(closed.url + "/admin/backends", headers=ADMIN).status_code == 404
    assert httpx.post(closed.url + "/admin/explain", headers=ADMIN, json={}).status_code == 404
    gw = gateway(fleet.backend_settings(), server={"admin_key": KEY})
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}):
        for r in (
            httpx.get(gw.url + "/admin/backends", headers=headers),
            httpx.post(gw.url + "/admin/explain", headers=headers, json={}),
        ):
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "invalid_admin_key"


def test_backends_show_health_breaker_load_calibration_capacity_and_index_share(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(2)
    model = fleet.backends[0].config.model
    gw = gateway(
        fleet.backend_settings(kv_cache_tokens=5000),
        server={"admin_key": KEY},
        routing={"policy": "round_robin"},
        breaker={"consecutive_failures": 1},
    )
    before = backends(gw)
    assert sorted(before) == ["sim-0", "sim-1"]
    for i, (backend_id, view) in enumerate(sorted(before.items())):
        assert view["healthy"] is True
        assert view["breaker"]["state"] == "closed"
        assert view["engine"] == "vllm"
        capacity = view["kv_capacity"]
        assert capacity["configured_tokens"] == 5000
        assert capacity["engine_tokens"] == fleet.backends[i].config.kv_capacity_tokens
        assert capacity["in_use_tokens"] == capacity["engine_tokens"]
        assert view["load"]["engine"] is not None  # the vLLM gauges, as polled
        assert view["load"]["in_flight"] == 0
        assert view["index"]["entries"] == 0
        assert view["index"]["capacity_blocks"] > 0
        assert set(view["calibration"][model]) == {
            "bytes_per_token",
            "prefill_tokens_per_s",
            "decode_s_per_token",
            "decode_batch_slope",
        }
        assert backend_id == view["id"]
    fleet.backends[1].set_faults(status_503_rate=1.0)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        first = client.post("/v1/chat/completions", json=chat(model, "one"))
        # Round robin puts sim-1 first now: its 503 opens its circuit, sim-0 answers.
        second = client.post("/v1/chat/completions", json=chat(model, "two", system="short"))
    assert first.headers["x-gateway-backend"] == "sim-0"
    assert second.headers["x-gateway-backend"] == "sim-0"
    after = backends(gw)
    assert after["sim-0"]["index"]["entries"] > 0  # the long system prompt's blocks
    assert after["sim-1"]["index"]["entries"] == 0  # nothing it answered is believed cached
    assert after["sim-1"]["breaker"]["state"] == "open"
    assert after["sim-1"]["breaker"]["opened"] == 1
    assert after["sim-1"]["breaker"]["retry_after_s"] > 0
    assert after["sim-0"]["breaker"]["state"] == "closed"


def test_drained_backends_leave_the_list_and_are_named(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(2)
    gw = gateway(fleet.backend_settings(), server={"admin_key": KEY})
    r = httpx.post(gw.url + "/admin/backends/sim-1/drain", headers=ADMIN, timeout=10)
    assert r.status_code == 200
    body = httpx.get(gw.url + "/admin/backends", headers=ADMIN, timeout=10).json()
    assert [b["id"] for b in body["backends"]] == ["sim-0"]
    assert body["drained"] == ["sim-1"]
    assert body["index"] == {"kind": "memory", "state": "ok", "share_counted": True}


def test_explain_ranks_the_prefix_holder_first_and_sends_nothing(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(2)
    model = fleet.backends[0].config.model
    gw = gateway(fleet.backend_settings(), server={"admin_key": KEY})
    r = httpx.post(gw.url + "/v1/chat/completions", json=chat(model, "first turn"), timeout=10)
    holder = r.headers["x-gateway-backend"]
    other = "sim-1" if holder == "sim-0" else "sim-0"
    seen = requests_seen(fleet)
    decided = decisions_counted(gw)
    assert decided == 1
    r = explain(gw, chat(model, "second turn"))
    assert r.status_code == 200, r.text
    view = r.json()
    assert requests_seen(fleet) == seen  # explained, not sent
    assert decisions_counted(gw) == decided  # a preview is not a routing decision
    assert view["kind"] == "chat"
    assert (view["tenant"], view["tier"], view["lane"]) == ("default", "standard", None)
    assert view["refused"] is None
    assert view["chosen"] == holder
    assert view["ranked"] == [holder, other]
    assert view["policy"].startswith("profile")
    assert view["would_queue"] is False
    rows = {row["id"]: row for row in view["candidates"]}
    assert rows[holder]["matched_blocks"] > 0
    assert rows[holder]["matched_blocks"] == view["prefix"]["best_match_blocks"]
    assert rows[other]["matched_blocks"] == 0
    assert rows[holder]["rank"] == 1
    assert rows[other]["rank"] == 2
    assert rows[holder]["cached_tokens"] > 0
    assert rows[holder]["scores"]["total"] >= rows[other]["scores"]["total"]
    assert "cost" in rows[holder]["scores"]
    assert view["explain"].startswith(view["policy"])
    # A completion body is told apart from a chat body.
    completion = explain(gw, {"model": model, "prompt": "Once upon a time"}).json()
    assert completion["kind"] == "completion"
    assert completion["chosen"] in ("sim-0", "sim-1")


FAST_SLOW_ADMISSION = {
    "tiers": {"interactive": {"pools": ["fast"], "rank": 0}, "standard": {"rank": 1}},
    "default_tier": "standard",
    "service_tiers": {"priority": "interactive"},
    "lanes": [
        {"name": "short", "up_to_tokens": 2000, "pools": ["fast"], "spill": ["slow"]},
        {"name": "long", "pools": ["slow"]},
    ],
}
AUTH = {
    "enabled": True,
    "keys": [
        {"sha256": hash_key("key-acme"), "tenant": "acme", "tiers": ["interactive"]},
    ],
}


@pytest.fixture
def tiered(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> tuple[GatewayHandle, str]:
    fleet = sim_fleet(2)
    entries = fleet.backend_settings()
    entries[0]["pool"], entries[1]["pool"] = "fast", "slow"
    gw = gateway(entries, server={"admin_key": KEY}, admission=FAST_SLOW_ADMISSION, auth=AUTH)
    return gw, fleet.backends[0].config.model


def test_explain_resolves_tenant_tier_and_lane(tiered: tuple[GatewayHandle, str]) -> None:
    gw, model = tiered
    body = chat(model, "hi", service_tier="priority")
    view = explain(gw, body, **{"x-gateway-client-key": "key-acme"}).json()
    assert (view["tenant"], view["tier"], view["lane"]) == ("acme", "interactive", "short")
    assert view["chosen"] == "sim-0"
    assert {row["id"]: row["in_tier"] for row in view["candidates"]} == {
        "sim-0": True,
        "sim-1": False,
    }
    anonymous = explain(gw, chat(model, "hi")).json()
    assert (anonymous["tenant"], anonymous["tier"]) == ("default", "standard")
    # A long prompt's lane has only the slow pool, which the interactive tier may not use.
    long_body = chat(model, "hi", system=SYSTEM * 10, service_tier="priority")
    refused = explain(gw, long_body, **{"x-gateway-client-key": "key-acme"}).json()
    assert refused["refused"]["status"] == 503
    assert refused["refused"]["code"] == "no_backend_in_lane"


def test_explain_rejects_what_the_inference_route_rejects(
    tiered: tuple[GatewayHandle, str],
) -> None:
    gw, model = tiered
    r = explain(gw, {"model": model, "messages": "nope"})
    assert r.status_code == 400
    assert r.json()["error"]["param"].startswith("messages")
    r = explain(gw, chat(model, "hi"), **{"x-gateway-client-key": "unknown"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    r = explain(gw, chat(model, "hi", service_tier="flex"))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "service_tier"
    r = httpx.post(gw.url + "/admin/explain?kind=embeddings", headers=ADMIN, json={})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "kind"
    unknown = explain(
        gw, {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}
    )
    assert unknown.json()["refused"]["code"] == "model_not_found"
