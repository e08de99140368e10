"""Helpers of the simulator integration tests: fleet handle and lenient SSE parsing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from gateway.sim.server import SimBackend

DONE = "[DONE]"


@dataclass
class FleetHandle:
    """Backends by role name ("vllm", "sglang", "tgi", "slow", "queue", "tgi2", "batch")."""

    backends: dict[str, SimBackend]
    urls: dict[str, str]

    def client(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.urls[name], timeout=10.0)


def payloads(raw: str) -> list[str]:
    """The data payloads of an SSE body, in order (space after "data:" optional)."""
    out: list[str] = []
    for line in raw.splitlines():
        if line.startswith("data:"):
            out.append(line[5:].removeprefix(" "))
    return out


def events(raw: str) -> list[Any]:
    """Decoded JSON events, with the final [DONE] checked and dropped."""
    data = payloads(raw)
    assert data[-1] == DONE, data[-1:]
    assert DONE not in data[:-1]
    return [orjson.loads(d) for d in data[:-1]]
