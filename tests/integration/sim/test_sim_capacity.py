"""KV capacity and start time as the simulated engines report them, over real HTTP."""

from __future__ import annotations

import re

from tests.integration.sim.support import FleetHandle


def sample(text: str, name: str) -> tuple[dict[str, str], float]:
    match = re.search(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$", text, re.MULTILINE)
    assert match is not None, name
    return dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")), float(match.group(2))


def test_vllm_metrics_carry_cache_config_and_start_time(sim_fleet: FleetHandle) -> None:
    backend = sim_fleet.backends["vllm"]
    with sim_fleet.client("vllm") as client:
        text = client.get("/metrics").text
    labels, value = sample(text, "vllm:cache_config_info")
    assert value == 1.0
    assert int(labels["num_gpu_blocks"]) * int(labels["block_size"]) == (
        backend.config.cache_capacity_blocks * backend.config.block_size
    )
    assert labels["enable_prefix_caching"] == "True"
    _, started = sample(text, "process_start_time_seconds")
    assert started == backend.engine.started_at


def test_restart_moves_the_start_time_forward(sim_fleet: FleetHandle) -> None:
    with sim_fleet.client("sglang") as client:
        _, before = sample(client.get("/metrics").text, "process_start_time_seconds")
        client.post("/sim/restart")
        _, after = sample(client.get("/metrics").text, "process_start_time_seconds")
    assert after > before


def test_sglang_server_info_under_both_names(sim_fleet: FleetHandle) -> None:
    config = sim_fleet.backends["sglang"].config
    with sim_fleet.client("sglang") as client:
        old = client.get("/get_server_info")
        new = client.get("/server_info")
    assert old.status_code == new.status_code == 200
    assert old.headers["content-type"] == "application/json"
    assert old.json() == new.json()
    info = new.json()
    assert info["max_total_num_tokens"] == config.cache_capacity_blocks * config.block_size
    assert (
        info["internal_states"][0]["memory_usage"]["token_capacity"]
        == (info["max_total_num_tokens"])
    )


def test_tgi_info_by_release(sim_fleet: FleetHandle) -> None:
    with sim_fleet.client("tgi") as client:
        three = client.get("/info").json()
        assert client.get("/server_info").status_code == 404
    with sim_fleet.client("tgi2") as client:
        two = client.get("/info").json()
        chunk = client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        ).json()
    assert "max_batch_total_tokens" not in three
    assert three["version"] == "3.3.4"
    assert two["max_batch_total_tokens"] == 4321 * 16
    assert (two["version"], chunk["system_fingerprint"]) == ("2.4.1", "2.4.1-native")
    assert two["max_total_tokens"] == 32768


def test_vllm_and_tgi_have_no_server_info(sim_fleet: FleetHandle) -> None:
    with sim_fleet.client("vllm") as client:
        assert client.get("/get_server_info").status_code == 404
