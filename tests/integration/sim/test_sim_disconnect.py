"""Client disconnects stop work promptly and are counted (awaited, never slept on)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from gateway.sim.server import SimBackend
from tests.integration.sim.support import FleetHandle

WAIT_S = 10.0
_unique = itertools.count()


def chat(tokens_of_text: int = 50, **extra: Any) -> dict[str, Any]:
    text = f"{next(_unique)} " + "x" * (4 * tokens_of_text)
    return {"messages": [{"role": "user", "content": text}], "stream": True, **extra}


@contextmanager
def open_stream(client: httpx.Client, body: dict[str, Any]) -> Iterator[httpx.Response]:
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        yield resp


def idle(backend: SimBackend) -> bool:
    return backend.wait_for(lambda s: s.requests_running == s.requests_waiting == 0, WAIT_S)


def test_disconnect_mid_stream_is_cancelled(sim_fleet: FleetHandle) -> None:
    backend = sim_fleet.backends["slow"]
    before = backend.stats.cancelled_total
    generated = backend.stats.generation_tokens_total
    with sim_fleet.client("slow") as client, open_stream(client, chat(max_tokens=5000)) as resp:
        first = next(resp.iter_raw())
        assert first.startswith(b"data: ")
    assert backend.wait_for_cancelled(before + 1, WAIT_S)
    assert idle(backend)
    assert backend.stats.generation_tokens_total - generated < 5000
    assert backend.stats.success_total == 0


def test_disconnect_while_queued_for_prefill(sim_fleet: FleetHandle) -> None:
    backend = sim_fleet.backends["queue"]
    before = backend.stats.cancelled_total
    with sim_fleet.client("queue") as client, open_stream(client, chat(5000, max_tokens=1)):
        assert backend.wait_for(lambda s: s.requests_running == 1, WAIT_S)
        with open_stream(client, chat(10, max_tokens=1)):
            assert backend.wait_for(lambda s: s.requests_waiting == 1, WAIT_S)
        assert backend.wait_for_cancelled(before + 1, WAIT_S)
        assert backend.stats.requests_waiting == 0
        assert backend.stats.requests_running == 1  # the first prefill goes on
    assert backend.wait_for_cancelled(before + 2, WAIT_S)  # ... until its client leaves too
    assert idle(backend)
    assert backend.stats.active_blocks == 0


def test_non_streamed_request_leaves_the_queue_on_disconnect(sim_fleet: FleetHandle) -> None:
    backend = sim_fleet.backends["queue"]
    before = backend.stats.cancelled_total
    url = urlsplit(sim_fleet.urls["queue"])
    payload = orjson.dumps({"prompt": "short prompt", "max_tokens": 1})
    request = (
        b"POST /v1/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    with sim_fleet.client("queue") as client, open_stream(client, chat(5000, max_tokens=1)):
        assert backend.wait_for(lambda s: s.requests_running == 1, WAIT_S)
        with socket.create_connection((url.hostname, url.port), timeout=WAIT_S) as raw:
            raw.sendall(request)
            assert backend.wait_for(lambda s: s.requests_waiting == 1, WAIT_S)
        assert backend.wait_for_cancelled(before + 1, WAIT_S)
        assert backend.stats.requests_waiting == 0
    assert idle(backend)


async def test_async_wait_for_cancelled(sim_fleet: FleetHandle) -> None:
    backend = sim_fleet.backends["slow"]
    before = backend.stats.cancelled_total
    async with (
        httpx.AsyncClient(base_url=sim_fleet.urls["slow"], timeout=WAIT_S) as client,
        client.stream(
            "POST", "/v1/completions", json={"prompt": "p", "max_tokens": 5000, "stream": True}
        ) as resp,
    ):
        async for _ in resp.aiter_raw():
            break
    assert await backend.wait_cancelled(before + 1, WAIT_S)
