"""Windows and lanes through a running gateway over simulated backends."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.harness import MODEL


def chat(chars: int, max_tokens: int = 8) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "word " * (chars // 5)}],
        "max_tokens": max_tokens,
    }


def windowed(fleet, *windows: int) -> list[dict[str, object]]:
    entries = fleet.backend_settings()
    for entry, window in zip(entries, windows, strict=True):
        entry["max_context"] = window
    return entries


def test_over_long_request_is_a_400_and_no_backend_sees_it(sim_fleet, gateway):
    fleet = sim_fleet(2)
    gw = gateway(windowed(fleet, 2048, 4096))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**chat(40_000))  # type: ignore[call-overload]
    assert caught.value.code == "context_length_exceeded"
    assert "4096" in caught.value.message
    assert sum(b.stats.requests_total for b in fleet.backends) == 0


def test_a_long_prompt_goes_only_to_the_backend_whose_window_holds_it(sim_fleet, gateway):
    fleet = sim_fleet(2)
    gw = gateway(windowed(fleet, 2048, 32768))
    for _ in range(4):
        r = httpx.post(gw.url + "/v1/chat/completions", json=chat(20_000), timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["x-gateway-backend"] == "sim-1"
    assert fleet.backends[0].stats.requests_total == 0


def test_lanes_send_short_and_long_to_their_pools(sim_fleet, gateway):
    fleet = sim_fleet(2)
    entries = fleet.backend_settings()
    entries[0]["pool"] = "short"
    entries[1]["pool"] = "long"
    lanes = [
        {"name": "short", "up_to_tokens": 1024, "pools": ["short"], "spill": ["long"]},
        {"name": "long", "pools": ["long"]},
    ]
    gw = gateway(entries, admission={"lanes": lanes})
    url = gw.url + "/v1/chat/completions"
    assert httpx.post(url, json=chat(400), timeout=10).headers["x-gateway-backend"] == "sim-0"
    assert httpx.post(url, json=chat(20_000), timeout=10).headers["x-gateway-backend"] == "sim-1"
