"""Per-flavor error shapes, statuses and injected faults over real HTTP."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from tests.integration.sim.support import FleetHandle, events, payloads

_unique = itertools.count()


def body(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"hello {next(_unique)}"}], **extra}


def post(fleet: FleetHandle, name: str, payload: Any) -> httpx.Response:
    with fleet.client(name) as client:
        if isinstance(payload, bytes):
            return client.post("/v1/chat/completions", content=payload)
        return client.post("/v1/chat/completions", json=payload)


def error_message(name: str, resp: httpx.Response) -> str:
    data = resp.json()
    if name == "vllm":
        assert set(data) == {"error"}
        assert data["error"]["code"] == resp.status_code
        assert data["error"]["param"] in (None, "model", "max_tokens", "input_tokens")
        return str(data["error"]["message"])
    if name == "sglang":
        assert data["object"] == "error"
        assert data["code"] == resp.status_code
        return str(data["message"])
    assert set(data) == {"error", "error_type"}
    return str(data["error"])


@pytest.mark.parametrize(
    ("name", "status", "json_body"),
    [("vllm", 400, True), ("sglang", 400, True), ("tgi", 400, False)],
)
def test_body_not_json(sim_fleet: FleetHandle, name: str, status: int, json_body: bool) -> None:
    resp = post(sim_fleet, name, b"{nope")
    assert resp.status_code == status
    if json_body:
        error_message(name, resp)
    else:
        assert resp.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(("name", "status"), [("vllm", 400), ("sglang", 400), ("tgi", 422)])
def test_missing_messages(sim_fleet: FleetHandle, name: str, status: int) -> None:
    assert post(sim_fleet, name, {"model": "sim-llama-8b"}).status_code == status


@pytest.mark.parametrize(("name", "status"), [("vllm", 400), ("sglang", 400), ("tgi", 422)])
def test_context_length(sim_fleet: FleetHandle, name: str, status: int) -> None:
    resp = post(sim_fleet, name, body(max_tokens=40000))
    assert resp.status_code == status
    assert "32768" in error_message(name, resp)


def test_unknown_model(sim_fleet: FleetHandle) -> None:
    resp = post(sim_fleet, "vllm", body(model="gpt-nope"))
    assert resp.status_code == 404
    assert error_message("vllm", resp) == (
        "The model `gpt-nope` does not exist. Valid aliases: sim-llama-8b."
    )
    assert resp.json()["error"]["type"] == "NotFoundError"
    assert resp.json()["error"]["param"] == "model"
    assert post(sim_fleet, "tgi", body(model="gpt-nope")).status_code == 200


def test_stream_options_without_stream(sim_fleet: FleetHandle) -> None:
    resp = post(sim_fleet, "vllm", body(stream_options={"include_usage": True}))
    assert resp.status_code == 400
    assert "stream=True" in error_message("vllm", resp)


@pytest.mark.parametrize(
    ("name", "fault", "status", "retry_after"),
    [
        ("vllm", "error", 500, None),
        ("vllm", "429", 429, "1"),
        ("vllm", "503", 503, "1"),
        ("sglang", "error", 500, None),
        ("sglang", "429", 429, "1"),
        ("tgi", "error", 424, None),
        ("tgi", "429", 429, None),
        ("tgi", "503", 503, None),
    ],
)
def test_faults_before_first_byte(
    sim_fleet: FleetHandle, name: str, fault: str, status: int, retry_after: str | None
) -> None:
    before = sim_fleet.backends[name].stats.errors_total
    resp = post(sim_fleet, name, body(sim_fault=fault, stream=True))
    assert resp.status_code == status
    assert resp.headers.get("retry-after") == retry_after
    error_message(name, resp)
    assert sim_fleet.backends[name].stats.errors_total == before + 1


@pytest.mark.parametrize("name", ["vllm", "sglang", "tgi"])
def test_midstream_error_event_then_done(sim_fleet: FleetHandle, name: str) -> None:
    resp = post(sim_fleet, name, body(sim_fault="midstream_error", stream=True, max_tokens=6))
    assert resp.status_code == 200
    chunks = events(resp.text)
    error = chunks[-1]["error"]
    assert "message" in error
    if name == "tgi":
        assert error["http_status_code"] == 424
    else:
        assert error["code"] == 500
    assert all("error" not in c for c in chunks[:-1])


@pytest.mark.parametrize("name", ["vllm", "tgi"])
def test_abort_midstream_closes_the_connection(sim_fleet: FleetHandle, name: str) -> None:
    before = sim_fleet.backends[name].stats.aborted_total
    received: list[str] = []
    with (
        sim_fleet.client(name) as client,
        client.stream(
            "POST", "/v1/chat/completions", json=body(sim_fault="abort_midstream", stream=True)
        ) as resp,
    ):
        assert resp.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            received.extend(resp.iter_text())
    assert "[DONE]" not in "".join(received)
    assert sim_fleet.backends[name].stats.aborted_total == before + 1


def test_abort_of_a_whole_response(sim_fleet: FleetHandle) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        post(sim_fleet, "sglang", body(sim_fault="abort_midstream"))


def test_slow_first_token_still_completes(sim_fleet: FleetHandle) -> None:
    resp = post(
        sim_fleet,
        "vllm",
        body(sim_fault="slow_first_token", sim_fault_delay_s=0.01, stream=True, max_tokens=2),
    )
    assert len(events(resp.text)) == 3


def test_random_faults_via_admin_endpoint(sim_fleet: FleetHandle) -> None:
    with sim_fleet.client("sglang") as client:
        faults = client.post("/sim/faults", json={"status_503_rate": 1.0, "retry_after_s": 7})
        assert faults.json()["status_503_rate"] == 1.0
        resp = client.post("/v1/chat/completions", json=body())
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == "7"
        assert client.post("/sim/faults", json={"reset": True}).json()["status_503_rate"] == 0
        assert client.post("/v1/chat/completions", json=body()).status_code == 200
        assert client.post("/sim/faults", json={"bogus": 1}).status_code == 400
        assert client.post("/sim/faults", content=b"[").status_code == 400


@pytest.mark.parametrize("name", ["vllm", "tgi"])
def test_loading_backend(sim_fleet: FleetHandle, name: str) -> None:
    sim_fleet.backends[name].set_faults(loading=True)
    with sim_fleet.client(name) as client:
        assert client.get("/health").status_code == 503
        assert client.post("/v1/chat/completions", json=body()).status_code == 503
    sim_fleet.backends[name].set_faults(loading=False)
    with sim_fleet.client(name) as client:
        health = client.get("/health")
    assert (health.status_code, health.content) == (200, b"")


def test_midstream_error_payload_is_data_event(sim_fleet: FleetHandle) -> None:
    resp = post(sim_fleet, "vllm", body(sim_fault="midstream_error", stream=True, max_tokens=2))
    assert payloads(resp.text)[-2].startswith('{"error":')
