"""What the gateway learns from real vLLM: bytes per token, cached-token predictions, speeds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from bench.engines_fleet import SERVED_MODEL
from gateway.prefix.render import render_prompt
from tests.engines.traffic import BACKEND_HEADER, by_backend, chat_body, words
from tests.support.harness import GatewayHandle

WARMUP = 32
MIN_SAMPLES = 8  # the gateway's calibration.min_samples default
TOLERANCE = 0.10
GROUPS, PER_GROUP = 3, 4


@dataclass
class Warmup:
    """What the warm-up requests showed: per backend, rendered bytes and engine tokens."""

    bytes: Counter[str] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)

    def true_ratio(self, backend: str) -> float:
        """Rendered bytes per engine token over the requests this backend answered."""
        return self.bytes[backend] / self.tokens[backend]

    def learned_backends(self) -> list[str]:
        """Backends that answered enough requests for the gateway to have learned."""
        return [b for b, n in self.requests.items() if n >= MIN_SAMPLES]


def _stream_usage(text: str) -> dict[str, int]:
    lines = [line for line in text.splitlines() if line.startswith("data:") and '"usage":{' in line]
    assert len(lines) == 1, text[-500:]
    usage: dict[str, int] = orjson.loads(lines[0][5:])["usage"]
    return usage


@pytest.fixture(scope="module")
def warmup(engine_gateway: GatewayHandle, run_key: str) -> Warmup:
    """~30 streamed chats of varied English-like text and length (200 to 1,100 tokens)."""
    seen = Warmup()
    with httpx.Client(timeout=120.0) as http:
        for i in range(WARMUP):
            n = 80 + (i * 37) % 380
            messages = [
                {"role": "system", "content": words(f"{run_key}:cal:sys:{i}", n // 4)},
                {"role": "user", "content": words(f"{run_key}:cal:user:{i}", n)},
            ]
            body = chat_body(messages, stream=True, stream_options={"include_usage": True})
            response = http.post(engine_gateway.url + "/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            backend = response.headers[BACKEND_HEADER]
            usage = _stream_usage(response.text)
            seen.bytes[backend] += render_prompt(body, "chat")[1]
            seen.tokens[backend] += usage["prompt_tokens"]
            seen.requests[backend] += 1
    return seen


def test_learned_bytes_per_token_matches_the_real_tokenizer(
    engine_gateway: GatewayHandle, warmup: Warmup, http: httpx.Client
) -> None:
    learned = by_backend(
        http, engine_gateway.url, "gateway_backend_bytes_per_token", source="learned"
    )
    configured = by_backend(
        http, engine_gateway.url, "gateway_backend_bytes_per_token", source="configured"
    )
    assert warmup.learned_backends()
    for backend in warmup.learned_backends():
        true = warmup.true_ratio(backend)
        print(f"{backend}: learned {learned[backend]:.3f} bytes/token, true {true:.3f}")
        assert abs(learned[backend] - true) <= TOLERANCE * true, (backend, learned, true)
        assert abs(configured[backend] - true) > TOLERANCE * true  # so learning mattered


def test_learned_bytes_per_token_agrees_with_vllm_tokenize(
    engine_gateway: GatewayHandle, warmup: Warmup, vllm_fleet, http: httpx.Client, run_key: str
) -> None:
    """Cross-check with the engine's own tokenizer endpoint on a fresh text."""
    messages = [{"role": "user", "content": words(f"{run_key}:cal:tokenize", 300)}]
    body = {"model": SERVED_MODEL, "messages": messages}
    tokens = http.post(vllm_fleet.servers[0].url + "/tokenize", json=body).json()["count"]
    true = render_prompt(chat_body(messages), "chat")[1] / tokens
    learned = by_backend(
        http, engine_gateway.url, "gateway_backend_bytes_per_token", source="learned"
    )
    for backend in warmup.learned_backends():
        assert abs(learned[backend] - true) <= TOLERANCE * true, (backend, learned, true)


def _counter(http: httpx.Client, gateway: GatewayHandle, name: str) -> float:
    return sum(by_backend(http, gateway.url, name).values())


def test_predicted_cached_tokens_match_what_vllm_reports(
    engine_gateway: GatewayHandle, warmup: Warmup, http: httpx.Client, run_key: str
) -> None:
    predicted0 = _counter(http, engine_gateway, "gateway_cached_tokens_predicted_total")
    reported0 = _counter(http, engine_gateway, "gateway_cached_tokens_reported_total")
    for g in range(GROUPS):
        system = words(f"{run_key}:cal:group:{g}", 450)  # about 1,100 tokens
        for q in range(PER_GROUP):
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": words(f"{run_key}:cal:q:{g}:{q}", 12)},
            ]
            response = http.post(
                engine_gateway.url + "/v1/chat/completions", json=chat_body(messages)
            )
            assert response.status_code == 200, response.text
    predicted = _counter(http, engine_gateway, "gateway_cached_tokens_predicted_total") - predicted0
    reported = _counter(http, engine_gateway, "gateway_cached_tokens_reported_total") - reported0
    print(f"cached tokens over the batch: predicted {predicted:.0f}, reported {reported:.0f}")
    assert reported > 0
    assert abs(predicted - reported) <= TOLERANCE * reported, (predicted, reported)


def test_prefill_speed_is_learned_from_streams(
    engine_gateway: GatewayHandle, warmup: Warmup, http: httpx.Client
) -> None:
    speed = "gateway_backend_prefill_tokens_per_second"
    learned = by_backend(http, engine_gateway.url, speed, source="learned")
    configured = by_backend(http, engine_gateway.url, speed, source="configured")
    assert set(learned) == set(configured) == set(warmup.requests) | set(learned)
    changed = [b for b in warmup.learned_backends() if learned[b] != configured[b]]
    print(f"prefill tokens/s learned {learned}, configured {configured}")
    assert changed, (learned, configured)
    assert all(learned[b] > 0 for b in changed)


@pytest.mark.parametrize(
    "options",
    [None, {}, {"include_usage": False}],
    ids=["no-options", "empty-options", "usage-false"],
)
def test_gateway_learns_from_every_stream_whatever_the_client_asked(
    engine_gateway: GatewayHandle, http: httpx.Client, run_key: str, options: dict | None
) -> None:
    """The gateway sees usage of streams whose client did not ask for it (and hides it)."""
    name = "gateway_cached_tokens_reported_total"
    before = _counter(http, engine_gateway, name)
    system = words(f"{run_key}:cal:options:{options}", 300)
    for i in range(3):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": f"Q{i}"}]
        body = chat_body(messages, stream=True)
        if options is not None:
            body["stream_options"] = options
        response = http.post(engine_gateway.url + "/v1/chat/completions", json=body)
        assert response.status_code == 200
        assert '"usage":{' not in response.text  # the client did not ask for usage
    assert _counter(http, engine_gateway, name) > before
