"""A tier's engine priority reaches real vLLM engines (started with priority scheduling)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bench.engines_fleet import SERVED_MODEL, VllmFleet
from gateway.admission.keys import hash_key
from tests.engines.conftest import backend_entries, wait_gateway_ready
from tests.support.harness import GatewayHandle, start_gateway

TIERS = {"urgent": {"engine_priority": -3}, "bulk": {"engine_priority": 7}}
ADMISSION = {
    "tiers": TIERS,
    "default_tier": "urgent",
    "service_tiers": {"priority": "urgent", "flex": "bulk"},
}
KEY = "engine-tier-key"
AUTH = {
    "enabled": True,
    "keys": [{"sha256": hash_key(KEY), "tenant": "t", "tier": "urgent", "tiers": ["bulk"]}],
}


@pytest.fixture(scope="module")
def priority_gateway(vllm_fleet: VllmFleet) -> Iterator[GatewayHandle]:
    handle = start_gateway(
        backend_entries(vllm_fleet),
        health={"interval_s": 0.5, "load_interval_s": 0.5},
        admission=ADMISSION,
        auth=AUTH,
    )
    try:
        wait_gateway_ready(handle, [s.name for s in vllm_fleet.servers])
        yield handle
    finally:
        handle.stop()


@pytest.mark.parametrize("service_tier", ["priority", "flex"])
def test_a_request_with_a_tier_priority_is_accepted_by_vllm(
    priority_gateway: GatewayHandle, http: httpx.Client, service_tier: str, run_key: str
) -> None:
    body = {
        "model": SERVED_MODEL,
        "messages": [{"role": "user", "content": f"[{run_key}] priority {service_tier}"}],
        "max_tokens": 3,
        "service_tier": service_tier,
    }
    url = priority_gateway.url + "/v1/chat/completions"
    headers = {"authorization": f"Bearer {KEY}"}
    seen = set()
    for stream in (False, True, False, True):
        r = http.post(url, json={**body, "stream": stream}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-gateway-tier"] == ("urgent" if service_tier == "priority" else "bulk")
        seen.add(r.headers["x-gateway-backend"])
    # What vLLM itself says of a non-zero priority when the policy is not priority scheduling
    # is why the gateway sends it only to backends marked so; here every engine takes it.
    direct = http.post(
        f"{priority_gateway.deps.fleet.backends[0].settings.base_url}/v1/chat/completions",
        json={**body, "priority": 5},
    )
    assert direct.status_code == 200, direct.text
    assert seen
