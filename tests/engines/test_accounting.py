"""Cache accounting against what real vLLM reports: a two-request conversation's cache reads,
cache writes and price in the response headers, the access log and the per-tenant counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.engines_fleet import SERVED_MODEL, VllmFleet
from tests.engines.conftest import backend_entries, wait_gateway_ready
from tests.engines.traffic import BACKEND_HEADER, chat_body, sse_events, words
from tests.observability.support import access_lines, line_of, value
from tests.support.harness import GatewayHandle, start_gateway

# USD per million tokens: cache reads a tenth of input, cache writes a quarter more.
PRICE = {"input": 2.0, "cache_read": 0.2, "cache_write": 2.5, "output": 8.0}
LABELS = {"tenant": "default", "tier": "standard", "model": SERVED_MODEL}


@pytest.fixture(scope="module")
def priced_gateway(vllm_fleet: VllmFleet) -> Iterator[GatewayHandle]:
    handle = start_gateway(
        backend_entries(vllm_fleet),
        health={"interval_s": 0.5, "load_interval_s": 0.5},
        pricing={SERVED_MODEL: PRICE},
    )
    try:
        wait_gateway_ready(handle, [s.name for s in vllm_fleet.servers])
        yield handle
    finally:
        handle.stop()


def engine_split(usage: dict[str, Any]) -> tuple[int, int]:
    """(cache read, cache write) as vLLM's own usage states them."""
    details = usage["prompt_tokens_details"]
    read = details["cached_tokens"]
    written = details.get("created_cache_tokens")
    return read, usage["prompt_tokens"] - read if written is None else written


def price(usage: dict[str, Any]) -> tuple[float, float]:
    """(cost, savings) in USD of one answered request at PRICE."""
    read, written = engine_split(usage)
    uncached = max(0, usage["prompt_tokens"] - read - written)
    cost = (
        uncached * PRICE["input"]
        + read * PRICE["cache_read"]
        + written * PRICE["cache_write"]
        + usage["completion_tokens"] * PRICE["output"]
    ) / 1e6
    return cost, read * (PRICE["input"] - PRICE["cache_read"]) / 1e6


def test_a_conversation_is_accounted_as_vllm_reports_it(
    priced_gateway: GatewayHandle, http: httpx.Client, run_key: str
) -> None:
    url = priced_gateway.url
    system = words(f"{run_key}:accounting:system", 300)  # about 700 tokens
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": words(f"{run_key}:accounting:q1", 8)},
    ]
    with access_lines() as lines:
        first = http.post(url + "/v1/chat/completions", json=chat_body(messages))
        assert first.status_code == 200, first.text
        first_line = line_of(lines, first.headers["x-request-id"])
        answer = first.json()["choices"][0]["message"]["content"]
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": words(f"{run_key}:accounting:q2", 8)},
        ]
        body = chat_body(messages, stream=True, stream_options={"include_usage": True})
        second = http.post(url + "/v1/chat/completions", json=body)
        assert second.status_code == 200, second.text
        second_line = line_of(lines, second.headers["x-request-id"])
    usages = [first.json()["usage"], sse_events(second.text)[-2]["usage"]]
    # The second turn went where the first was cached, and vLLM says it read from its cache.
    assert second.headers[BACKEND_HEADER] == first.headers[BACKEND_HEADER]
    (read_1, write_1), (read_2, write_2) = (engine_split(u) for u in usages)
    assert read_1 == 0
    assert write_1 > 0
    assert 0 < read_2 <= usages[0]["prompt_tokens"]
    # A non-streamed answer carries the split as headers (a stream's head leaves before usage).
    assert int(first.headers["x-gateway-cache-read-tokens"]) == read_1
    assert int(first.headers["x-gateway-cache-write-tokens"]) == write_1
    for line, usage in zip((first_line, second_line), usages, strict=True):
        cost, savings = price(usage)
        assert (line["cached_tokens"], line["cache_write_tokens"]) == engine_split(usage)
        assert line["prompt_tokens"] == usage["prompt_tokens"]
        assert line["completion_tokens"] == usage["completion_tokens"]
        assert line["cost_usd"] == pytest.approx(cost)
        assert line["savings_usd"] == pytest.approx(savings)
    text = http.get(url + "/metrics").text
    tokens = {
        kind: value(text, "gateway_tokens_total", kind=kind, **LABELS)
        for kind in ("prompt", "completion", "cache_read", "cache_write")
    }
    assert tokens == {
        "prompt": sum(u["prompt_tokens"] for u in usages),
        "completion": sum(u["completion_tokens"] for u in usages),
        "cache_read": read_1 + read_2,
        "cache_write": write_1 + write_2,
    }
    costs = [price(u) for u in usages]
    assert value(text, "gateway_cost_usd_total", **LABELS) == pytest.approx(
        sum(c for c, _ in costs)
    )
    assert value(text, "gateway_cache_savings_usd_total", **LABELS) == pytest.approx(
        sum(s for _, s in costs)
    )
