"""A long shared prefix sticks to one real engine, and that engine reports it cached."""

from __future__ import annotations

import httpx
import orjson

from tests.engines.traffic import BACKEND_HEADER, chat_body, words
from tests.support.harness import GatewayHandle

REPEATS = 5


def test_shared_prefix_lands_on_one_backend_and_hits_its_cache(
    engine_gateway: GatewayHandle, http: httpx.Client, run_key: str
) -> None:
    system = words(f"{run_key}:affinity:system", 300)  # about 700 tokens
    backends: list[str] = []
    cached: list[int] = []
    for i in range(REPEATS):
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": words(f"{run_key}:affinity:question:{i}", 10)},
        ]
        response = http.post(engine_gateway.url + "/v1/chat/completions", json=chat_body(messages))
        assert response.status_code == 200, response.text
        backends.append(response.headers[BACKEND_HEADER])
        usage = response.json()["usage"]
        cached.append(usage["prompt_tokens_details"]["cached_tokens"])
        assert usage["prompt_tokens"] > 500
    assert len(set(backends)) == 1, backends
    assert cached[0] == 0
    assert all(c > 0 for c in cached[1:]), cached
    assert all(c % 32 == 0 for c in cached), cached  # whole vLLM blocks of 32 tokens


def test_the_same_prefix_streamed_hits_too(
    engine_gateway: GatewayHandle, http: httpx.Client, run_key: str
) -> None:
    system = words(f"{run_key}:affinity:stream", 300)
    seen: list[tuple[str, int]] = []
    for i in range(3):
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Question {i}?"},
        ]
        body = chat_body(messages, stream=True, stream_options={"include_usage": True})
        response = http.post(engine_gateway.url + "/v1/chat/completions", json=body)
        assert response.status_code == 200
        usage_line = [line for line in response.text.splitlines() if '"usage":{' in line]
        assert len(usage_line) == 1
        usage = orjson.loads(usage_line[0][5:])["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        seen.append((response.headers[BACKEND_HEADER], cached))
    assert len({b for b, _ in seen}) == 1, seen
    assert all(c > 0 for _, c in seen[1:]), seen
