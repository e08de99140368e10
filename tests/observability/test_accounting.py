"""Cache reads, writes and price per request: from usage, through a gateway, per tenant."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.accounting import Prices, cache_split
from gateway.proxy.usage import Usage, parse_usage
from gateway.settings import ModelPricing
from tests.observability.support import access_lines, line_of, value, wait_until
from tests.support.harness import MODEL, GatewayHandle, SimFleetHandle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vllm"
PRICE = ModelPricing(input=3.0, cache_read=0.3, cache_write=3.75, output=15.0)


def test_a_real_engine_usage_block_is_split_into_read_and_write() -> None:
    body = json.loads((FIXTURES / "chat_nonstream.json").read_text())["body"]
    usage = parse_usage(orjson.dumps(body))
    assert usage == Usage(1316, 8, 1312, 0)
    charge = Prices({"tiny-llama": PRICE}).charge("tiny-llama", usage)
    assert charge is not None
    assert (charge.cache_read_tokens, charge.cache_write_tokens) == (1312, 0)
    # 4 uncached prompt tokens at the input price, 1312 read, 8 out.
    expected = (4 * 3.0 + 1312 * 0.3 + 8 * 15.0) / 1e6
    assert charge.cost_usd == pytest.approx(expected)
    assert charge.savings_usd == pytest.approx(1312 * (3.0 - 0.3) / 1e6)
    assert charge.headers() == [
        (b"x-gateway-cache-read-tokens", b"1312"),
        (b"x-gateway-cache-write-tokens", b"0"),
    ]


def test_write_falls_back_to_prompt_less_cached_and_needs_cached() -> None:
    assert cache_split(Usage(100, 5, 40)) == (40, 60)
    assert cache_split(Usage(100, 5, 40, 48)) == (40, 48)
    assert cache_split(Usage(100, 5, None)) == (None, None)
    prices = Prices({"m": PRICE})
    unknown = prices.charge("m", Usage(100, 5, None))
    assert unknown is not None
    assert unknown.headers() == []
    assert unknown.cost_usd == pytest.approx((100 * 3.0 + 5 * 15.0) / 1e6)
    assert unknown.savings_usd == 0.0
    unpriced = prices.charge("other", Usage(100, 5, 40))
    assert unpriced is not None
    assert unpriced.cost_usd is None
    assert prices.charge("m", Usage(None, 5, None)) is None


def turn(client: httpx.Client, messages: list[dict[str, Any]]) -> httpx.Response:
    body = {"model": MODEL, "messages": messages, "max_tokens": 5}
    r = client.post(
        "/v1/chat/completions", json=body, headers={"x-request-id": f"t{len(messages)}"}
    )
    assert r.status_code == 200, r.text
    return r


def test_a_two_turn_conversation_is_billed_as_its_usage_says(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(1)  # the vLLM flavour: cached_tokens and created_cache_tokens
    block = fleet.backends[0].config.block_size
    gw = gateway(
        fleet.backend_settings(reports_cached_tokens=True),
        pricing={MODEL: PRICE.model_dump()},
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a careful travel agent. " * 40},
        {"role": "user", "content": "Plan three days in Lisbon."},
    ]
    with access_lines() as lines, httpx.Client(base_url=gw.url, timeout=10) as client:
        first = turn(client, messages)
        reply = first.json()["choices"][0]["message"]
        messages += [reply, {"role": "user", "content": "And a fourth day?"}]
        second = turn(client, messages)
        line_of(lines, "t4")
        wait_until(lambda: "gateway_cost_usd_total{" in client.get("/metrics").text, "cost")
        text = client.get("/metrics").text
    usages = [first.json()["usage"], second.json()["usage"]]
    one, two = usages
    # Turn one: nothing cached; the engine wrote every whole block of the prompt.
    assert one["prompt_tokens_details"]["cached_tokens"] == 0
    written_one = one["prompt_tokens"] // block * block
    assert first.headers["x-gateway-cache-read-tokens"] == "0"
    assert first.headers["x-gateway-cache-write-tokens"] == str(written_one)
    # Turn two reads what turn one wrote and writes only what is new.
    read_two = two["prompt_tokens_details"]["cached_tokens"]
    assert read_two >= written_one - block
    assert second.headers["x-gateway-cache-read-tokens"] == str(read_two)
    written_two = two["prompt_tokens_details"]["created_cache_tokens"]
    assert second.headers["x-gateway-cache-write-tokens"] == str(written_two)
    labels = {"tenant": "default", "tier": "standard", "model": MODEL}
    tokens = "gateway_tokens_total"
    assert value(text, tokens, kind="cache_read", **labels) == read_two
    assert value(text, tokens, kind="cache_write", **labels) == written_one + written_two
    prompt = one["prompt_tokens"] + two["prompt_tokens"]
    assert value(text, tokens, kind="prompt", **labels) == prompt
    uncached = prompt - read_two - written_one - written_two
    completion = one["completion_tokens"] + two["completion_tokens"]
    expected = (
        uncached * 3.0 + read_two * 0.3 + (written_one + written_two) * 3.75 + completion * 15.0
    ) / 1e6
    assert value(text, "gateway_cost_usd_total", **labels) == pytest.approx(expected)
    saved = read_two * (3.0 - 0.3) / 1e6
    assert value(text, "gateway_cache_savings_usd_total", **labels) == pytest.approx(saved)
