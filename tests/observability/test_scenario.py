"""A scripted scenario through a real gateway and simulated fleet, then its /metrics: miss, hit,
failover, stream, rate limit, disconnect, unknown model, degraded index; promtool accepts the
exposition and the values are the ones the scenario implies."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.admission.keys import hash_key
from tests.observability.support import (
    access_lines,
    line_of,
    promtool_check,
    total,
    value,
    wait_until,
)
from tests.support.harness import MODEL, GatewayHandle, SimFleetHandle
from tests.support.redis_server import RedisServer

SYSTEM = "You answer questions about the solar system, briefly and with care. " * 30
PRICE = {"input": 3.0, "cache_read": 0.3, "cache_write": 3.75, "output": 15.0}
ALICE, BOB = "alice-key", "bob-key"


def chat(user: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    return {"model": MODEL, "messages": messages, "max_tokens": 4, **extra}


def cost(line: dict[str, Any]) -> float:
    uncached = line["prompt_tokens"] - line["cached_tokens"] - line["cache_write_tokens"]
    return (
        uncached * PRICE["input"]
        + line["cached_tokens"] * PRICE["cache_read"]
        + line["cache_write_tokens"] * PRICE["cache_write"]
        + line["completion_tokens"] * PRICE["output"]
    ) / 1e6


def scenario_gateway(
    sim_fleet: Callable[..., SimFleetHandle],
    gateway: Callable[..., GatewayHandle],
    redis: RedisServer,
) -> tuple[SimFleetHandle, GatewayHandle]:
    fleet = sim_fleet(2)
    gw = gateway(
        fleet.backend_settings(reports_cached_tokens=True),
        index={
            "kind": "redis",
            "redis_url": redis.url,
            "lookup_timeout_ms": 50,
            "record_timeout_ms": 100,
            "load_exchange_ms": 0,
        },
        auth={
            "enabled": True,
            "keys": [
                {"sha256": hash_key(ALICE), "tenant": "alice", "tier": "standard"},
                {"sha256": hash_key(BOB), "tenant": "bob", "tier": "batch"},
            ],
        },
        admission={
            "tiers": {
                "standard": {},
                "batch": {"reject_status": 429, "limits": {"requests_per_min": 1}},
            }
        },
        pricing={MODEL: PRICE},
    )
    return fleet, gw


def post(client: httpx.Client, key: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )


def test_scripted_scenario_shows_in_the_metrics(
    sim_fleet: Callable[..., SimFleetHandle],
    gateway: Callable[..., GatewayHandle],
    redis_server: RedisServer,
) -> None:
    fleet, gw = scenario_gateway(sim_fleet, gateway, redis_server)
    sims = {b.backend_id: b for b in fleet.backends}
    ok = 0
    with access_lines() as lines, httpx.Client(base_url=gw.url, timeout=30) as client:
        # Miss: nothing cached anywhere; the whole prompt is written.
        miss = post(client, ALICE, chat("Which planet is largest?"))
        assert miss.status_code == 200, miss.text
        ok += 1
        holder = miss.headers["x-gateway-backend"]
        assert miss.headers["x-gateway-cache-read-tokens"] == "0"
        assert int(miss.headers["x-gateway-cache-write-tokens"]) > 400
        assert gw.call(gw.deps.tasks.settle())
        # Hit: the same system prompt follows its backend and is read from its cache.
        hit = post(client, ALICE, chat("Which planet is smallest?"))
        assert hit.status_code == 200
        ok += 1
        assert hit.headers["x-gateway-backend"] == holder
        read = int(hit.headers["x-gateway-cache-read-tokens"])
        assert read > 400
        assert gw.call(gw.deps.tasks.settle())
        # Failover: the holder answers 503 before its first byte; the other one answers.
        sims[holder].faults.update({"status_503_rate": 1.0})
        failover = post(client, ALICE, chat("Which planet has rings?"))
        sims[holder].faults.update({"status_503_rate": 0.0})
        assert failover.status_code == 200
        ok += 1
        other = failover.headers["x-gateway-backend"]
        assert other != holder
        # A stream: no cache headers (they would have to precede the usage), TTFT and ITL.
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json=chat("Name the moons of Mars.", stream=True, max_tokens=6),
            headers={"authorization": f"Bearer {ALICE}"},
        ) as stream:
            assert stream.status_code == 200
            assert "x-gateway-cache-read-tokens" not in stream.headers
            stream.read()
        ok += 1
        streamed = line_of(lines, stream.headers["x-request-id"])
        assert streamed["completion_tokens"] == 6
        assert streamed["ttft_s"] is not None
        # Rate limit: bob's tier allows one request a minute.
        assert post(client, BOB, chat("First question.")).status_code == 200
        limited = post(client, BOB, chat("Second question."))
        assert limited.status_code == 429
        # Disconnect: the client gives up while both backends are slow to start.
        for sim in fleet.backends:
            sim.faults.update({"slow_first_token_s": 30.0})
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                "/v1/chat/completions",
                json=chat("A question nobody waits for.", stream=True),
                headers={"authorization": f"Bearer {ALICE}"},
                timeout=0.5,
            )
        wait_until(lambda: sum(b.stats.cancelled_total for b in fleet.backends) == 1, "cancel")
        for sim in fleet.backends:
            sim.faults.update({"slow_first_token_s": 0.0})
        # A model nobody serves: a 404, and the name never becomes a label.
        assert post(client, ALICE, {**chat("?"), "model": "made-up-model"}).status_code == 404
        wait_until(lambda: len(lines) == ok + 4, "every request's access line")
        # Degraded index: Redis stops; requests go on, routed by load only.
        redis_server.stop()
        deadline = time.monotonic() + 30
        while value(client.get("/metrics").text, "gateway_index_degraded") != 1.0:
            assert post(client, ALICE, chat(f"Outage question {ok}.")).status_code == 200
            ok += 1
            assert time.monotonic() < deadline, "the index never degraded"
        assert post(client, ALICE, chat("While degraded.")).status_code == 200
        ok += 1
        wait_until(lambda: len(lines) == ok + 4, "every request's access line")
        text = client.get("/metrics").text

    done = promtool_check(text)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "made-up-model" not in text

    outcome = "gateway_requests_by_outcome_total"
    standard = {"tier": "standard", "lane": "default"}
    assert value(text, outcome, **standard, status_class="2xx", reason="ok") == ok
    assert value(text, outcome, tier="batch", lane="default", status_class="2xx", reason="ok") == 1
    limited_labels = {"status_class": "4xx", "reason": "rate_limit_exceeded"}
    assert value(text, outcome, tier="batch", lane="default", **limited_labels) == 1
    assert value(text, outcome, **standard, status_class="499", reason="client_closed") == 1
    # The 404 is refused before its model is placed: its lane is not known.
    unknown = {"tier": "standard", "lane": "none", "status_class": "4xx"}
    assert value(text, outcome, **unknown, reason="model_not_found") == 1
    rejections = {"tier": "batch", "tenant": "bob", "reason": "requests"}
    assert value(text, "gateway_admission_rejections_total", **rejections) == 1
    assert value(text, "gateway_client_disconnects_total", route="chat") == 1

    assert value(text, "gateway_failovers_total", **standard) == 1
    attempts = "gateway_upstream_attempts_total"
    assert value(text, attempts, backend=holder, outcome="status_503") == 1
    assert total(text, attempts, outcome="cancelled") == 1

    decisions = "gateway_routing_decisions_total"
    assert total(text, decisions, reason="cold") >= 1
    assert total(text, decisions, reason="cache_hit") >= 2  # the hit, the failover
    assert total(text, decisions, reason="index_degraded") >= 1
    assert value(text, "gateway_index_degraded") == 1.0

    # Latencies: every answered request of the standard tier end to end; TTFT and ITL of
    # its one stream that finished (the one given up had no first byte).
    assert value(text, "gateway_request_e2e_seconds_count", **standard) == ok
    assert value(text, "gateway_request_ttft_seconds_count", **standard) == 1
    assert value(text, "gateway_request_itl_seconds_count", **standard) == 1

    # Tokens and cost: the counters are the sums of the access lines' figures.
    answered = [line for line in lines if line["tenant"] == "alice" and line["status"] == 200]
    assert len(answered) == ok
    alice = {"tenant": "alice", "tier": "standard", "model": MODEL}
    tokens = "gateway_tokens_total"
    for kind, field in [
        ("prompt", "prompt_tokens"),
        ("completion", "completion_tokens"),
        ("cache_read", "cached_tokens"),
        ("cache_write", "cache_write_tokens"),
    ]:
        assert value(text, tokens, kind=kind, **alice) == sum(line[field] for line in answered)
    assert line_of(lines, hit.headers["x-request-id"])["cached_tokens"] == read
    expected_cost = sum(cost(line) for line in answered)
    assert value(text, "gateway_cost_usd_total", **alice) == pytest.approx(expected_cost)
    saved = sum(line["cached_tokens"] for line in answered) * (PRICE["input"] - PRICE["cache_read"])
    assert value(text, "gateway_cache_savings_usd_total", **alice) == pytest.approx(saved / 1e6)
    bob = {"tenant": "bob", "tier": "batch", "model": MODEL}
    assert value(text, tokens, kind="completion", **bob) == 4
