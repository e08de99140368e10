"""Backend errors of every engine come out in OpenAI's shape; failover before the first byte."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.sse import events, parsed
from tests.support.harness import MODEL
from tests.support.serving import bound_socket, port_of

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}]}


def assert_openai_error(body: dict, status: int) -> dict:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["code"] is None or isinstance(error["code"], str)
    return error


@pytest.mark.parametrize("flavor", ["vllm", "sglang", "tgi"])
def test_context_overflow_is_a_400_in_openai_shape(sim_fleet, gateway, flavor):
    fleet = sim_fleet(1, flavor, max_model_len=64)
    gw = gateway(fleet.backend_settings())
    long_prompt = {"role": "user", "content": "word " * 200}
    r = httpx.post(
        gw.url + "/v1/chat/completions", json={**CHAT, "messages": [long_prompt]}, timeout=10
    )
    assert r.status_code == 400
    error = assert_openai_error(r.json(), 400)
    assert error["type"] == "invalid_request_error"
    if "x-gateway-backend" not in r.headers:
        # The window was learned from /v1/models: the gateway answers without the backend.
        assert error["code"] == "context_length_exceeded"
        assert fleet.backends[0].stats.requests_total == 0


@pytest.mark.parametrize("flavor", ["vllm", "sglang", "tgi"])
@pytest.mark.parametrize(("fault", "status"), [("429", 429), ("503", 503), ("error", 502)])
def test_backend_error_statuses_are_normalised(sim_fleet, gateway, flavor, fault, status):
    fleet = sim_fleet(1, flavor)
    gw = gateway(fleet.backend_settings())
    r = httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "sim_fault": fault}, timeout=10)
    assert r.status_code == status
    assert_openai_error(r.json(), status)
    if status in (429, 503):
        assert 1 <= int(r.headers["retry-after"]) <= 60


@pytest.mark.parametrize("flavor", ["vllm", "sglang", "tgi"])
def test_midstream_engine_error_is_rewritten_in_band(sim_fleet, gateway, flavor):
    fleet = sim_fleet(1, flavor)
    gw = gateway(fleet.backend_settings())
    body = {**CHAT, "stream": True, "max_tokens": 8, "sim_fault": "midstream_error"}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        chunks = parsed(list(events(r)))
    assert chunks[-1] == "[DONE]"
    errors = [c for c in chunks[:-1] if "error" in c]
    assert len(errors) == 1
    assert_openai_error(errors[0], 500)


def test_abort_midstream_ends_with_in_band_error_and_done(sim_fleet, gateway):
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    body = {**CHAT, "stream": True, "max_tokens": 8, "sim_fault": "abort_midstream"}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        chunks = parsed(list(events(r)))
    assert chunks[-1] == "[DONE]"
    error = assert_openai_error(chunks[-2], 502)
    assert "sim-0" in error["message"]
    assert r.headers["x-gateway-backend"] == "sim-0"
    attempts = [
        line
        for line in httpx.get(gw.url + "/metrics").text.splitlines()
        if line.startswith("gateway_upstream_attempts_total{")
    ]
    # One attempt, counted once, as broken (not also as ok).
    assert attempts == ['gateway_upstream_attempts_total{backend="sim-0",outcome="broken"} 1.0']


def test_unavailable_backend_is_retried_elsewhere(sim_fleet, gateway):
    fleet = sim_fleet(2)
    fleet.backends[0].set_faults(status_503_rate=1.0)
    gw = gateway(fleet.backend_settings())
    served = set()
    for _ in range(6):
        r = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=10)
        assert r.status_code == 200
        served.add(r.headers["x-gateway-backend"])
    assert served == {"sim-1"}
    assert fleet.backends[0].stats.requests_total >= 1
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'gateway_upstream_attempts_total{backend="sim-1",outcome="ok"} 6.0' in metrics
    assert 'gateway_upstream_attempts_total{backend="sim-0",outcome="status_503"}' in metrics


def test_dead_backend_before_first_byte_is_retried_elsewhere(sim_fleet, gateway):
    fleet = sim_fleet(1)
    dead = bound_socket()
    dead_port = port_of(dead)
    dead.close()  # nothing listens there any more: connections are refused
    backends = [
        {"id": "dead", "url": f"http://127.0.0.1:{dead_port}", "models": [MODEL]},
        *fleet.backend_settings(),
    ]
    gw = gateway(backends, health={"interval_s": 60, "load_interval_s": 60})
    for stream in (False, True, False, True):
        r = httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": stream}, timeout=10)
        assert r.status_code == 200
        assert r.headers["x-gateway-backend"] == "sim-0"


def test_all_backends_failing_gives_an_openai_error(sim_fleet, gateway):
    fleet = sim_fleet(2)
    for backend in fleet.backends:
        backend.set_faults(error_rate=1.0)
    gw = gateway(fleet.backend_settings())
    r = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 502
    assert_openai_error(r.json(), 502)
    assert sum(b.stats.requests_total for b in fleet.backends) == 2
