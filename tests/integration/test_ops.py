"""Operations endpoints: liveness, readiness, metrics, model listing."""

from __future__ import annotations

import httpx

from tests.support.harness import MODEL


def test_health_ready_models_and_metrics(sim_fleet, gateway):
    fleet = sim_fleet(2, max_model_len=16384)
    gw = gateway(fleet.backend_settings())
    assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["healthy_backends"] == 2
    models = httpx.get(gw.url + "/v1/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == MODEL
    assert models["data"][0]["max_model_len"] == 16384

    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(gw.url + "/v1/chat/completions", json=chat).status_code == 200
    assert httpx.post(gw.url + "/v1/chat/completions", content=b"{").status_code == 400
    text = httpx.get(gw.url + "/metrics").text
    assert 'gateway_requests_total{route="chat",status="200"} 1.0' in text
    assert 'gateway_requests_total{route="chat",status="400"} 1.0' in text
    assert "gateway_time_to_first_byte_seconds_bucket" in text
    assert "gateway_routing_decision_seconds_bucket" in text


def test_readyz_is_503_until_started(sim_fleet):
    from gateway.app import GatewayApp
    from gateway.deps import build_deps
    from gateway.settings import settings_from_mapping
    from tests.support.serving import ServerThread

    fleet = sim_fleet(1)
    deps = build_deps(settings_from_mapping({"backends": fleet.backend_settings()}))
    server = ServerThread([GatewayApp(deps)]).start()
    try:
        assert httpx.get(server.urls[0] + "/readyz").status_code == 503
    finally:
        server.call(deps.close())
        server.stop()
