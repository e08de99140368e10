"""Usage asked for on every stream, and taken back out for clients that did not ask for it.

The gateway learns from every response's `usage` (cache hits, bytes per token), so it asks the
backend for the usage chunk even when the client did not; such a client must then get exactly
the stream it would have got without the gateway.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from gateway.prefix.render import render_prompt
from tests.integration.sse import parsed
from tests.support.harness import MODEL

SYSTEM = "You are a meticulous assistant who answers in full sentences. " * 40  # ~2.4 KB
CONFIGURED_BYTES_PER_TOKEN = 4.0


def chat(question: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
        ],
        "max_tokens": 5,
        **extra,
    }


def stream_raw(url: str, body: dict[str, Any]) -> tuple[bytes, list[Any], str]:
    """The raw body, the parsed events and the answering backend of a streamed request."""
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        raw = r.read()
        backend = r.headers.get("x-gateway-backend", "")
    payloads = [
        line[5:].lstrip(" ") for line in raw.decode().splitlines() if line.startswith("data:")
    ]
    return raw, parsed(payloads), backend


def comparable(chunks: list[Any]) -> list[Any]:
    """Chunks without what differs between two runs (ids, timestamps) and without `usage`."""
    out: list[Any] = []
    for chunk in chunks:
        if isinstance(chunk, dict):
            chunk = {k: v for k, v in chunk.items() if k not in ("id", "created", "usage")}
        out.append(chunk)
    return out


def metric(url: str, name: str, **labels: str) -> float | None:
    """One sample of the gateway's /metrics, by name and exact labels (None when absent)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.rindex("}") + 1]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


def eventually(read: Any, accept: Any, timeout_s: float = 5.0) -> Any:
    """Poll `read()` until `accept(value)` or the deadline; the last value either way."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not accept(value) and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


def test_stream_without_include_usage_gets_exactly_the_chunks_it_asked_for(sim_fleet, gateway):
    fleet = sim_fleet(1)
    sim_url = fleet.urls[0]
    gw = gateway(fleet.backend_settings(reports_cached_tokens=True))
    body = chat("What is a KV cache?", stream=True)

    _, direct, _ = stream_raw(sim_url, body)
    first_raw, first, _ = stream_raw(gw.url, body)
    second_raw, second, backend = stream_raw(gw.url, body)  # the system prompt is cached now

    for raw, chunks in ((first_raw, first), (second_raw, second)):
        assert b'"usage":{' not in raw
        assert b'"prompt_tokens"' not in raw
        assert chunks[-1] == "[DONE]"
        assert all(c["choices"] for c in chunks[:-1])  # no usage-only chunk
        assert comparable(chunks) == comparable(direct)
    # Without the gateway, the backend adds no usage chunk either.
    assert all(c["choices"] for c in direct[:-1])

    # The gateway still saw the usage: the backend reported the cached system prompt.
    reported = eventually(
        lambda: metric(gw.url, "gateway_cached_tokens_reported_total", backend=backend),
        lambda v: v is not None and v > 0,
    )
    assert reported is not None
    assert reported > 0


def test_stream_that_asked_for_usage_gets_it(sim_fleet, gateway):
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    body = chat("Tell me about Paris.", stream=True, stream_options={"include_usage": True})
    raw, chunks, _ = stream_raw(gw.url, body)
    _, direct, _ = stream_raw(fleet.urls[0], body)
    assert chunks[-1] == "[DONE]"
    usage = chunks[-2]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["prompt_tokens"] > 0
    assert raw.count(b'"usage":{') == 1
    assert comparable(chunks) == comparable(direct)


def test_stream_with_include_usage_false_gets_no_usage_chunk(sim_fleet, gateway):
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    body = chat("Tell me about Rome.", stream=True, stream_options={"include_usage": False})
    raw, chunks, _ = stream_raw(gw.url, body)
    _, direct, _ = stream_raw(fleet.urls[0], body)
    assert b'"usage":{' not in raw
    assert comparable(chunks) == comparable(direct)


def test_non_stream_body_is_unchanged(sim_fleet, gateway):
    fleet = sim_fleet(1)
    twin = sim_fleet(1)  # the same backend, as cold, for the direct request
    gw = gateway(fleet.backend_settings())
    body = chat("Tell me about Lisbon.")
    through = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
    direct = httpx.post(twin.urls[0] + "/v1/chat/completions", json=body, timeout=10)
    assert through.status_code == direct.status_code == 200
    got, want = through.json(), direct.json()
    # The backend's answer, usage included, passes as it is.
    assert got["usage"] == want["usage"]
    assert {k: v for k, v in got.items() if k not in ("id", "created")} == {
        k: v for k, v in want.items() if k not in ("id", "created")
    }


def test_bytes_per_token_is_learned_from_usage(sim_fleet, gateway):
    fleet = sim_fleet(1)
    sim = fleet.backends[0]
    gw = gateway(fleet.backend_settings())
    labels = {"backend": sim.backend_id, "model": MODEL}
    learned = metric(gw.url, "gateway_backend_bytes_per_token", **labels, source="learned")
    configured = metric(gw.url, "gateway_backend_bytes_per_token", **labels, source="configured")
    assert learned == configured == CONFIGURED_BYTES_PER_TOKEN

    ratios: list[float] = []
    for i in range(10):
        # Streams, so the client asks for nothing and the gateway still needs the usage.
        body = chat(f"Question number {i}: " + "why is the sky blue? " * (i + 1), stream=True)
        body["stream_options"] = {"include_usage": True}  # to read prompt_tokens ourselves
        _, chunks, _ = stream_raw(gw.url, body)
        prompt_tokens = chunks[-2]["usage"]["prompt_tokens"]
        rendered = render_prompt(body, "chat")[1]
        ratios.append(rendered / prompt_tokens)

    value = eventually(
        lambda: metric(gw.url, "gateway_backend_bytes_per_token", **labels, source="learned"),
        lambda v: v != CONFIGURED_BYTES_PER_TOKEN,
    )
    assert value is not None
    assert value != CONFIGURED_BYTES_PER_TOKEN
    assert min(ratios) <= value <= max(ratios)  # a median of what the engine reported
    assert any(abs(value - r) < 1e-9 for r in ratios)
    true_ratio = sim.config.bytes_per_token
    # Moved off the configured 4.0, toward the engine's tokenizer.
    assert abs(value - true_ratio) < abs(CONFIGURED_BYTES_PER_TOKEN - true_ratio)
    configured = metric(gw.url, "gateway_backend_bytes_per_token", **labels, source="configured")
    assert configured == CONFIGURED_BYTES_PER_TOKEN


def test_bytes_per_token_is_learned_from_streams_that_did_not_ask_for_usage(sim_fleet, gateway):
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    backend = gw.deps.fleet.backends[0]
    for i in range(10):
        raw, _, _ = stream_raw(gw.url, chat(f"Question {i}: what is entropy?", stream=True))
        assert b'"usage":{' not in raw
    model = eventually(
        lambda: backend.calibration.model(MODEL),
        lambda m: m.bytes_per_token.learned,
    )
    assert model.bytes_per_token.learned
    assert model.bytes_per_token.value != CONFIGURED_BYTES_PER_TOKEN


def test_kv_capacity_from_the_engine_when_the_simulator_describes_its_cache(sim_fleet, gateway):
    fleet = sim_fleet(1)
    sim = fleet.backends[0]
    scrape = httpx.get(fleet.urls[0] + "/metrics", timeout=10).text
    gw = gateway(fleet.backend_settings(kv_cache_tokens=1_000_000))
    configured = metric(gw.url, "gateway_backend_kv_capacity_tokens", backend=sim.backend_id,
                        source="configured")  # fmt: skip
    assert configured == 1_000_000
    engine = metric(gw.url, "gateway_backend_kv_capacity_tokens", backend=sim.backend_id,
                    source="engine")  # fmt: skip
    if "vllm:cache_config_info" not in scrape:
        # A simulator that does not describe its cache: nothing is made up.
        assert engine is None
        return
    # deps.start() polled the metrics once before serving.
    assert engine == sim.config.cache_capacity_blocks * sim.config.block_size


def test_re_serialised_body_keeps_the_other_stream_options(sim_fleet, gateway):
    # stream_options without include_usage: true is re-serialised with it; the backend must
    # accept it and the client still gets the stream it asked for.
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    options = {"include_usage": False, "continuous_usage_stats": False}
    body = chat("Hola", stream=True, stream_options=options)
    raw, chunks, _ = stream_raw(gw.url, body)
    _, direct, _ = stream_raw(fleet.urls[0], body)
    assert chunks[-1] == "[DONE]"
    assert b'"usage":{' not in raw
    assert comparable(chunks) == comparable(direct)


def test_stream_options_without_include_usage_get_no_usage_chunk(sim_fleet, gateway):
    # vLLM 0.32's StreamOptions defaults include_usage to false (tests/fixtures/vllm): a
    # client that sends stream_options without the key gets no usage chunk from vLLM, and
    # none through the gateway either, while the gateway still reads the usage.
    fleet = sim_fleet(1)
    twin = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    body = chat("Hola", stream=True, stream_options={"continuous_usage_stats": False})
    raw_direct, direct, _ = stream_raw(twin.urls[0], body)
    assert b'"usage":{' not in raw_direct
    raw, chunks, _ = stream_raw(gw.url, body)
    assert b'"usage":{' not in raw
    assert comparable(chunks) == comparable(direct)
