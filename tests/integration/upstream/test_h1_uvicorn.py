"""H1Upstream against real uvicorn servers: the simulated engine and a connection-recording app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gateway.sim.config import SimBackendConfig
from gateway.sim.server import SimBackend
from tests.support.serving import ServerThread

T = 10.0
MODEL = SimBackendConfig().model


class Recorder:
    """An ASGI app that remembers each request's client address and answers /status/N with N."""

    def __init__(self) -> None:
        self.clients: list[tuple[str, int]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.clients.append(tuple(scope["client"]))
        while (await receive()).get("more_body"):
            pass
        parts = scope["path"].strip("/").split("/")
        status = int(parts[1]) if parts[0] == "status" else 200
        body = orjson.dumps({"status": status, "path": scope["path"]})
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def connections_since(self, start: int) -> int:
        """Distinct client connections among the requests recorded after index `start`."""
        return len(set(self.clients[start:]))


class Servers:
    """The module's servers: a zero-latency sim, a slow sim, and a Recorder."""

    def __init__(self) -> None:
        self.fast = SimBackend(SimBackendConfig(time_scale=0.0))
        self.slow = SimBackend(SimBackendConfig(backend_id="sim-slow", decode_s_per_token=0.05))
        self.recorder = Recorder()
        self.thread = ServerThread([self.fast, self.slow, self.recorder]).start()
        self.fast_url, self.slow_url, self.recorder_url = self.thread.urls


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    started = Servers()
    yield started
    started.thread.stop()


def chat(stream: bool, max_tokens: int = 16) -> bytes:
    message = {"role": "user", "content": "Tell me about prefix caches."}
    return orjson.dumps(
        {"model": MODEL, "messages": [message], "max_tokens": max_tokens, "stream": stream}
    )


JSON_HEADERS = [(b"content-type", b"application/json"), (b"accept-encoding", b"identity")]


async def test_sim_answers_a_chat_completion(servers, h1):
    client = h1()
    url = servers.fast_url + "/v1/chat/completions"
    response = await client.send("POST", url, chat(False), JSON_HEADERS, timeout_s=T)
    assert response.status == 200
    assert response.header(b"content-type") == b"application/json"
    body = orjson.loads(await response.read())
    await response.aclose()
    assert body["usage"]["completion_tokens"] == 16


async def test_sim_streams_every_event(servers, h1):
    client = h1()
    url = servers.fast_url + "/v1/chat/completions"
    response = await client.send("POST", url, chat(True, 64), JSON_HEADERS, timeout_s=T)
    assert response.status == 200
    assert response.header(b"transfer-encoding") == b"chunked"
    body = b"".join([chunk async for chunk in response.chunks()])
    await response.aclose()
    events = [e for e in body.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    assert events[-1] == b"data: [DONE]"
    assert len(events) >= 64


async def test_closing_a_stream_cancels_the_generation(servers, h1):
    client = h1()
    before = servers.slow.stats.cancelled_total
    url = servers.slow_url + "/v1/chat/completions"
    response = await client.send("POST", url, chat(True, 400), JSON_HEADERS, timeout_s=T)
    assert await anext(response.chunks())
    await response.aclose()
    assert await servers.slow.wait_cancelled(before + 1, 10.0)


async def test_uvicorn_sees_one_connection_for_sequential_requests(servers, h1):
    client = h1()
    start = len(servers.recorder.clients)
    for i in range(5):
        response = await client.send("GET", f"{servers.recorder_url}/n/{i}", None, [], timeout_s=T)
        assert orjson.loads(await response.read())["path"] == f"/n/{i}"
        await response.aclose()
    assert servers.recorder.connections_since(start) == 1


async def test_error_statuses_from_uvicorn_keep_the_connection(servers, h1):
    client = h1()
    start = len(servers.recorder.clients)
    for status in (404, 500, 503):
        url = f"{servers.recorder_url}/status/{status}"
        response = await client.send("POST", url, b"{}", JSON_HEADERS, timeout_s=T)
        assert response.status == status
        assert orjson.loads(await response.read()) == {
            "status": status,
            "path": f"/status/{status}",
        }
        await response.aclose()
    assert servers.recorder.connections_since(start) == 1


async def test_fifty_concurrent_requests_over_eight_connections(servers, h1):
    client = h1(max_connections_per_origin=8)
    start = len(servers.recorder.clients)

    async def one(i: int) -> str:
        response = await client.send("GET", f"{servers.recorder_url}/c/{i}", None, [], timeout_s=T)
        try:
            return str(orjson.loads(await response.read())["path"])
        finally:
            await response.aclose()

    paths = await asyncio.gather(*(one(i) for i in range(50)))
    assert paths == [f"/c/{i}" for i in range(50)]
    assert servers.recorder.connections_since(start) <= 8
