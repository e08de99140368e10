"""The gateway reads real vLLM metrics: health, the names our adapter scrapes, KV capacity."""

from __future__ import annotations

import time

import httpx

from bench.engines_fleet import VllmFleet, samples, scrape
from tests.engines.traffic import by_backend, chat_body, words
from tests.support.harness import GatewayHandle

ADAPTER_READS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:cache_config_info",
    "vllm:prompt_tokens_total",
    "vllm:request_success_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "process_start_time_seconds",
)
DISCOVERY_S = 30.0


def _traffic(gateway: GatewayHandle, http: httpx.Client, key: str, n: int) -> None:
    for i in range(n):
        body = chat_body([{"role": "user", "content": words(f"{key}:{i}", 40)}])
        assert http.post(gateway.url + "/v1/chat/completions", json=body).status_code == 200


def test_gateway_sees_both_engines_healthy(
    engine_gateway: GatewayHandle, vllm_fleet: VllmFleet, http: httpx.Client, run_key: str
) -> None:
    _traffic(engine_gateway, http, f"{run_key}:metrics", 4)
    healthy = by_backend(http, engine_gateway.url, "gateway_backend_healthy")
    assert healthy == {s.name: 1.0 for s in vllm_fleet.servers}
    requests = samples(http.get(engine_gateway.url + "/metrics").text, "gateway_requests_total")
    assert sum(v for labels, v in requests if labels.get("status") == "200") >= 4


def test_vllm_exposes_every_metric_our_adapter_reads(
    vllm_fleet: VllmFleet, http: httpx.Client
) -> None:
    for server in vllm_fleet.servers:
        text = scrape(http, server.url)
        missing = [name for name in ADAPTER_READS if not samples(text, name)]
        assert missing == [], f"{server.name} lacks {missing}"
        (labels, value), *_ = samples(text, "vllm:cache_config_info")
        assert value == 1.0
        assert int(labels["block_size"]) == vllm_fleet.options.block_size
        assert labels["enable_prefix_caching"] == "True"
        (_, started), *_ = samples(text, "process_start_time_seconds")
        assert 0 < started <= time.time()


def _engine_kv(http: httpx.Client, fleet: VllmFleet) -> dict[str, float]:
    out: dict[str, float] = {}
    for server in fleet.servers:
        (labels, _), *_ = samples(scrape(http, server.url), "vllm:cache_config_info")
        out[server.name] = float(int(labels["num_gpu_blocks"]) * int(labels["block_size"]))
    return out


def test_engine_discovered_kv_capacity_is_what_vllm_reports(
    engine_gateway: GatewayHandle, vllm_fleet: VllmFleet, http: httpx.Client
) -> None:
    want = _engine_kv(http, vllm_fleet)
    deadline = time.monotonic() + DISCOVERY_S
    got: dict[str, float] = {}
    while time.monotonic() < deadline:
        got = by_backend(
            http, engine_gateway.url, "gateway_backend_kv_capacity_tokens", source="engine"
        )
        if got.keys() == want.keys():
            break
        time.sleep(0.5)
    assert got == want
    configured = by_backend(
        http, engine_gateway.url, "gateway_backend_kv_capacity_tokens", source="configured"
    )
    assert set(configured) == set(want)


def test_gateway_reads_the_engines_load_and_window(
    engine_gateway: GatewayHandle, vllm_fleet: VllmFleet, http: httpx.Client, run_key: str
) -> None:
    """The adapter parsed real gauges (not None), learned max_model_len, saw no restart."""
    _traffic(engine_gateway, http, f"{run_key}:load", 2)
    deadline = time.monotonic() + DISCOVERY_S
    backends = engine_gateway.deps.fleet.backends
    while time.monotonic() < deadline and any(b.state.engine is None for b in backends):
        time.sleep(0.2)
    for backend in backends:
        engine = backend.state.engine
        assert engine is not None, backend.id
        assert engine.running >= 0
        assert engine.waiting >= 0
        assert engine.kv_usage is not None
        assert 0.0 <= engine.kv_usage <= 1.0
        assert backend.state.learned_max_context == vllm_fleet.options.max_model_len
    restarts = by_backend(http, engine_gateway.url, "gateway_backend_restarts_total")
    assert all(v == 0 for v in restarts.values()), restarts
