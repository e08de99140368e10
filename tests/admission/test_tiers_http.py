"""Keys, tenants and tiers through a running gateway: 401s, tier choice, pools, priority."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from gateway.admission.keys import hash_key
from tests.admission.recorder import Recorder
from tests.support.serving import ServerThread

MODEL = "rec-model"
TIERS = {
    "interactive": {"pools": ["fast"], "rank": 0, "engine_priority": -5},
    "standard": {"rank": 1},
    "batch": {"pools": ["slow"], "rank": 2, "engine_priority": 10},
}
ADMISSION = {
    "tiers": TIERS,
    "default_tier": "standard",
    "service_tiers": {"priority": "interactive", "default": "standard", "flex": "batch"},
}
AUTH = {
    "enabled": True,
    "keys": [
        {
            "sha256": hash_key("key-acme"),
            "tenant": "acme",
            "tier": "interactive",
            "tiers": ["batch"],
        },
        {"sha256": hash_key("key-bulk"), "tenant": "bulk", "tier": "batch"},
    ],
}


@pytest.fixture
def recorders() -> Iterator[tuple[list[Recorder], ServerThread]]:
    backends = [Recorder(), Recorder()]
    server = ServerThread(backends).start()
    yield backends, server
    server.stop()


def entries(
    server: ServerThread, fast: str = "vllm", slow: str = "tgi", priority_scheduling: bool = True
) -> list[dict[str, object]]:
    common = {"models": [MODEL], "priority_scheduling": priority_scheduling}
    return [
        {"id": "fast", "url": server.urls[0], "engine": fast, "pool": "fast", **common},
        {"id": "slow", "url": server.urls[1], "engine": slow, "pool": "slow", **common},
    ]


def post(url: str, body: bytes, key: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(url + "/v1/chat/completions", content=body, headers=headers, timeout=10)


def chat(**extra: object) -> bytes:
    return orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra})


def test_missing_and_unknown_keys_are_401_invalid_api_key(recorders, gateway):
    backends, server = recorders
    gw = gateway(entries(server), admission=ADMISSION, auth=AUTH)
    for key in (None, "wrong"):
        r = post(gw.url, chat(), key)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert all(not b.bodies for b in backends)


def test_key_picks_tenant_tier_and_pool_and_the_key_is_not_forwarded(recorders, gateway):
    backends, server = recorders
    gw = gateway(entries(server), admission=ADMISSION, auth=AUTH)
    acme = post(gw.url, chat(), "key-acme")
    assert acme.status_code == 200, acme.text
    assert acme.headers["x-gateway-tier"] == "interactive"
    assert acme.headers["x-gateway-backend"] == "fast"
    bulk = post(gw.url, chat(), "key-bulk")
    assert bulk.headers["x-gateway-tier"] == "batch"
    assert bulk.headers["x-gateway-backend"] == "slow"
    for recorder in backends:
        assert all(b"authorization" not in h for h in recorder.headers)


def test_service_tier_is_honoured_only_where_the_key_allows_it(recorders, gateway):
    backends, server = recorders
    gw = gateway(entries(server), admission=ADMISSION, auth=AUTH)
    flex = post(gw.url, chat(service_tier="flex"), "key-acme")
    assert flex.headers["x-gateway-tier"] == "batch"
    auto = post(gw.url, chat(service_tier="auto"), "key-acme")
    assert auto.headers["x-gateway-tier"] == "interactive"
    refused = post(gw.url, chat(service_tier="priority"), "key-bulk")
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "service_tier"
    bogus = post(gw.url, chat(service_tier="turbo"), "key-acme")
    assert bogus.status_code == 400
    assert bogus.json()["error"]["param"] == "service_tier"
    assert len(backends[0].bodies) + len(backends[1].bodies) == 2


def test_auth_off_uses_the_default_tier(recorders, gateway):
    _, server = recorders
    gw = gateway(entries(server), admission=ADMISSION)
    r = post(gw.url, chat(), None)
    assert r.status_code == 200
    assert r.headers["x-gateway-tier"] == "standard"


def test_priority_goes_to_vllm_and_everything_else_byte_for_byte(recorders, gateway):
    backends, server = recorders
    gw = gateway(entries(server, fast="vllm", slow="vllm"), admission=ADMISSION, auth=AUTH)
    # Odd spacing and key order must survive: only the priority is added.
    sent = b'{ "model" : "rec-model", "messages":[{"role":"user","content":"h\\u00e9"}],"n":1 }'
    assert post(gw.url, sent, "key-acme").status_code == 200
    got = backends[0].bodies[-1]
    assert got == b'{"priority":-5,' + sent.lstrip()[1:]
    # A client's own priority is replaced by the tier's, not left to win.
    assert post(gw.url, chat(priority=0), "key-acme").status_code == 200
    assert orjson.loads(backends[0].bodies[-1])["priority"] == -5


def test_vllm_without_priority_scheduling_gets_no_priority(recorders, gateway):
    # vLLM refuses a non-zero priority unless it was started with priority scheduling.
    backends, server = recorders
    listed = entries(server, priority_scheduling=False)
    gw = gateway(listed, admission=ADMISSION, auth=AUTH)
    sent = chat(max_tokens=3)
    assert post(gw.url, sent, "key-acme").headers["x-gateway-backend"] == "fast"
    assert backends[0].bodies == [sent]


def test_tgi_gets_no_priority_and_the_body_as_sent(recorders, gateway):
    backends, server = recorders
    gw = gateway(entries(server), admission=ADMISSION, auth=AUTH)
    sent = chat(max_tokens=3)
    assert post(gw.url, sent, "key-bulk").headers["x-gateway-backend"] == "slow"
    assert backends[1].bodies == [sent]


def test_a_tier_without_engine_priority_forwards_the_body_unchanged(recorders, gateway):
    backends, server = recorders
    gw = gateway(entries(server), admission=ADMISSION)  # standard tier: no engine priority
    sent = chat(temperature=0.5)
    for _ in range(4):
        assert post(gw.url, sent, None).status_code == 200
    assert backends[0].bodies + backends[1].bodies == [sent] * 4
