"""Requests for the real-engine tests: English-like text, chat bodies, gateway metric reads."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from bench.engines_fleet import SERVED_MODEL, samples
from bench.text import PseudoText

TEXT = PseudoText(seed=11)
BACKEND_HEADER = "x-gateway-backend"


def words(key: str, n: int) -> str:
    """About `n` * 2.4 tokens of the tiny model's tokenizer (4 * `n` ASCII bytes)."""
    return TEXT.text(key, n)


def chat_body(messages: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    """A greedy chat request for the tiny model."""
    return {"model": SERVED_MODEL, "messages": messages, "max_tokens": 4, "temperature": 0, **extra}


def post(client: httpx.Client, base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST a JSON body."""
    return client.post(base + path, json=body)


def sse_events(raw: str) -> list[Any]:
    """The decoded `data:` events of an SSE body, `[DONE]` kept as the string."""
    out: list[Any] = []
    for line in raw.splitlines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def metric(client: httpx.Client, base: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` on `base/metrics`."""
    return samples(client.get(base + "/metrics", timeout=10.0).text, name)


def by_backend(client: httpx.Client, base: str, name: str, **labels: str) -> dict[str, float]:
    """Samples of `name` keyed by their `backend` label, filtered by `labels`."""
    return {
        got["backend"]: value
        for got, value in metric(client, base, name)
        if all(got.get(k) == v for k, v in labels.items())
    }
