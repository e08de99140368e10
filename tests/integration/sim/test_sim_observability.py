"""Metrics, models, flavor extras and admin routes of the simulated backends."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.integration.sim.support import FleetHandle

_unique = itertools.count()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


def long_chat(tag: str) -> dict[str, object]:
    content = f"{tag} " + "a long repeated system prompt " * 40
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 2}


def test_vllm_metrics_counters_move(sim_fleet: FleetHandle) -> None:
    body = long_chat(f"metrics {next(_unique)}")
    with sim_fleet.client("vllm") as client:
        before = client.get("/metrics")
        assert before.headers["content-type"].startswith("text/plain")
        client.post("/v1/chat/completions", json=body)
        client.post("/v1/chat/completions", json=body)
        after = client.get("/metrics").text
    names = ["vllm:prompt_tokens_total", "vllm:generation_tokens_total"]
    names += ["vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"]
    for name in names:
        assert metric(after, name) > metric(before.text, name), name
    assert metric(after, "vllm:num_requests_running") == 0
    assert 'engine="0"' in after


@pytest.mark.parametrize(
    ("name", "gauge", "counter"),
    [
        ("sglang", "sglang:num_running_reqs", "sglang:prompt_tokens_total"),
        ("tgi", "tgi_queue_size", "tgi_request_count"),
    ],
)
def test_other_flavor_metrics(sim_fleet: FleetHandle, name: str, gauge: str, counter: str) -> None:
    with sim_fleet.client(name) as client:
        before = metric(client.get("/metrics").text, counter)
        client.post("/v1/chat/completions", json=long_chat(f"m {next(_unique)}"))
        text = client.get("/metrics").text
    assert metric(text, gauge) == 0
    assert metric(text, counter) > before


@pytest.mark.parametrize(
    ("name", "owned_by"), [("vllm", "vllm"), ("sglang", "sglang"), ("tgi", "sim-llama-8b")]
)
def test_models(sim_fleet: FleetHandle, name: str, owned_by: str) -> None:
    with sim_fleet.client(name) as client:
        data = client.get("/v1/models").json()
    assert data["object"] == "list"
    card = data["data"][0]
    assert (card["id"], card["owned_by"]) == ("sim-llama-8b", owned_by)
    if name != "tgi":
        assert card["max_model_len"] == 32768


def test_flavor_extras(sim_fleet: FleetHandle) -> None:
    with sim_fleet.client("sglang") as client:
        load = client.get("/get_load").json()
        assert load[0]["num_reqs"] == 0
        assert "num_waiting_reqs" in load[0]
    with sim_fleet.client("tgi") as client:
        info = client.get("/info").json()
        assert info["max_total_tokens"] == 32768
        assert client.get("/get_load").status_code == 404
    with sim_fleet.client("vllm") as client:
        assert client.get("/info").json() == {"detail": "Not Found"}
        assert client.get("/v1/chat/completions").status_code == 405


def test_restart_clears_cache_and_bumps_epoch(sim_fleet: FleetHandle) -> None:
    body = long_chat(f"restart {next(_unique)}")
    with sim_fleet.client("sglang") as client:
        client.post("/v1/chat/completions", json=body)
        warm = client.post("/v1/chat/completions", json=body).json()["usage"]
        epoch = client.get("/sim/stats").json()["epoch"]
        assert client.post("/sim/restart").json() == {"epoch": epoch + 1}
        cold = client.post("/v1/chat/completions", json=body).json()["usage"]
        stats = client.get("/sim/stats").json()
    assert warm["prompt_tokens_details"]["cached_tokens"] > 0
    assert cold["prompt_tokens_details"]["cached_tokens"] == 0
    assert stats["epoch"] == epoch + 1
    assert stats["config"]["flavor"] == "sglang"
    assert stats["faults"]["error_rate"] == 0


def test_flush_cache_route(sim_fleet: FleetHandle) -> None:
    with sim_fleet.client("sglang") as client:
        epoch = client.get("/sim/stats").json()["epoch"]
        assert client.post("/flush_cache").status_code == 200
        stats = client.get("/sim/stats").json()
    assert (stats["cache_blocks"], stats["epoch"]) == (0, epoch)
