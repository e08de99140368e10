"""Streaming through the gateway: chunk order, early first chunk, disconnects, headers."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.sse import events, parsed
from tests.support.harness import MODEL

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about Paris."}]}


@pytest.mark.parametrize("flavor", ["vllm", "sglang", "tgi"])
def test_stream_keeps_chunk_order_usage_and_done(sim_fleet, gateway, flavor):
    fleet = sim_fleet(2, flavor)
    gw = gateway(fleet.backend_settings())
    body = {**CHAT, "stream": True, "max_tokens": 6, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-gateway-backend"] in {"sim-0", "sim-1"}
        assert r.headers["x-request-id"]
        chunks = parsed(list(events(r)))
    assert chunks[-1] == "[DONE]"
    objects = chunks[:-1]
    assert objects[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in objects if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 6
    usage = objects[-1]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 6
    assert all("usage" not in c or c["usage"] is None for c in objects[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(sim_fleet, gateway):
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    body = {**CHAT, "stream": True, "max_tokens": 3}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        chunks = parsed(list(events(r)))
    assert chunks[-1] == "[DONE]"
    assert all(c["choices"] for c in chunks[:-1])


def test_client_request_id_is_echoed(sim_fleet, gateway):
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    r = httpx.post(
        gw.url + "/v1/chat/completions", json=CHAT, headers={"x-request-id": "abc-123"}, timeout=10
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "abc-123"


def test_first_chunk_arrives_while_backend_still_generating(sim_fleet, gateway):
    # 200 tokens at 50 ms each: the backend needs 10 s to finish; the test closes early.
    fleet = sim_fleet(1, time_scale=1.0, decode_s_per_token=0.05, prefill_tokens_per_s=1e9)
    backend = fleet.backends[0]
    gw = gateway(fleet.backend_settings())
    body = {**CHAT, "stream": True, "max_tokens": 200}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        lines = events(r)  # kept referenced: dropping the iterator would close the connection
        first = next(lines)
        stats = backend.stats
        assert first != "[DONE]"
        # The backend has neither finished nor given up: the chunk was relayed as it came.
        assert stats.success_total == 0
        assert stats.cancelled_total == 0


def test_client_disconnect_cancels_upstream_stream(sim_fleet, gateway):
    fleet = sim_fleet(1, time_scale=1.0, decode_s_per_token=0.05, prefill_tokens_per_s=1e9)
    backend = fleet.backends[0]
    gw = gateway(fleet.backend_settings())
    body = {**CHAT, "stream": True, "max_tokens": 400}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        next(events(r))
    # Leaving the block closed the connection mid-stream.
    assert backend.wait_for_cancelled(1, timeout=10)
    assert backend.stats.success_total == 0


def test_client_disconnect_cancels_upstream_non_stream(sim_fleet, gateway):
    fleet = sim_fleet(1, time_scale=1.0, decode_s_per_token=0.05, prefill_tokens_per_s=1e9)
    backend = fleet.backends[0]
    gw = gateway(fleet.backend_settings())
    with pytest.raises(httpx.ReadTimeout):
        # The backend needs 20 s; give up once it is surely running.
        httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 400}, timeout=0.5)
    assert backend.wait_for_cancelled(1, timeout=10)
