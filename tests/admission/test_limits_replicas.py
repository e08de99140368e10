"""Tenant limits through two gateway processes sharing one Redis: N per minute, not N x 2."""

from __future__ import annotations

import httpx

from tests.admission.recorder import Recorder
from tests.support.gateway_process import GatewayProcess
from tests.support.harness import MODEL
from tests.support.serving import ServerThread


def chat(max_tokens: int) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me about limits."}],
        "max_tokens": max_tokens,
    }


def test_two_gateways_share_one_tenants_limits(tmp_path, sim_fleet, redis_url, unique_prefix):
    fleet = sim_fleet(1)
    index = {"kind": "redis", "redis_url": redis_url, "key_prefix": unique_prefix}
    tiers = {"standard": {"limits": {"requests_per_min": 4, "tokens_per_min": 100_000}}}
    gateways = []
    for name in ("a", "b"):
        config_dir = tmp_path / name
        config_dir.mkdir()
        process = GatewayProcess(
            config_dir, fleet.backend_settings(), index=index, admission={"tiers": tiers}
        )
        gateways.append(process.start())
    try:
        statuses = []
        for i in range(10):
            url = gateways[i % 2].url + "/v1/chat/completions"
            r = httpx.post(url, json=chat(4), timeout=10)
            statuses.append(r.status_code)
            assert r.headers["x-ratelimit-limit-requests"] == "4"
            assert "x-ratelimit-remaining-tokens" in r.headers
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert statuses.count(200) == 4
        assert statuses.count(429) == 6
        assert fleet.backends[0].stats.requests_total == 4
    finally:
        for process in gateways:
            process.stop()


def test_tokens_reserved_at_admission_are_settled_from_usage(gateway):
    recorder = Recorder(MODEL)
    server = ServerThread([recorder]).start()
    try:
        backend = {"id": "rec", "url": server.urls[0], "engine": "vllm", "models": [MODEL]}
        tiers = {"standard": {"limits": {"tokens_per_min": 10_000}}}
        gw = gateway([backend], admission={"tiers": tiers})
        url = gw.url + "/v1/chat/completions"
        first = httpx.post(url, json=chat(4000), timeout=10)
        assert first.status_code == 200
        left_first = int(first.headers["x-ratelimit-remaining-tokens"])
        reserved = 10_000 - left_first
        assert reserved > 4000  # the output asked for, plus the prompt estimate
        second = httpx.post(url, json=chat(4000), timeout=10)
        # The first reservation was settled to the 4 tokens its usage reported: two
        # reservations would not fit under 10 000 - 2 x 4000 - 2 x prompt.
        assert second.status_code == 200
        left_second = int(second.headers["x-ratelimit-remaining-tokens"])
        assert left_second >= 10_000 - 4 - reserved - 1  # (the bucket refills as time passes)
        third = httpx.post(url, json=chat(9995), timeout=10)  # over what the two used left
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        server.stop()


def test_a_request_refused_while_its_limits_were_checked_gives_back_what_it_took(
    sim_fleet, gateway, redis_url, unique_prefix
):
    # With limits in Redis the check runs while the request is placed; a request the
    # window refuses then must leave no concurrency slot held and no tokens reserved.
    fleet = sim_fleet(1)
    entries = fleet.backend_settings()
    entries[0]["max_context"] = 4096
    index = {"kind": "redis", "redis_url": redis_url, "key_prefix": unique_prefix}
    limits = {"tokens_per_min": 100_000, "max_concurrent": 1}
    gw = gateway(entries, index=index, admission={"tiers": {"standard": {"limits": limits}}})
    url = gw.url + "/v1/chat/completions"
    long_body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "word " * 8000}],
        "max_tokens": 8,
    }
    refused = httpx.post(url, json=long_body, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    assert fleet.backends[0].stats.requests_total == 0
    ok = httpx.post(url, json=chat(4), timeout=10)
    assert ok.status_code == 200, ok.text  # a slot still held by the refused one: a 429
    reserved_by_one = 100_000 - int(ok.headers["x-ratelimit-remaining-tokens"])
    assert reserved_by_one < 1000  # the refused request's ~10 000 tokens were given back
