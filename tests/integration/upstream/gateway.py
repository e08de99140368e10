"""A gateway served by uvicorn on the test's own event loop, over loopback, for raw backends.

Backends scripted with RawServer run on the same loop, so a test can hold a backend on an
asyncio.Event and look at the gateway's state in between. No poller runs: backends count as
healthy, and only the requests a test sends reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from gateway.app import GatewayApp
from gateway.deps import Deps, build_deps
from gateway.settings import settings_from_mapping
from tests.integration.sse import parsed
from tests.integration.upstream.rawserver import Handler, RawServer
from tests.support.serving import bound_socket, port_of

MODEL = "raw-model"


def backend(server: Any, backend_id: str, **extra: Any) -> dict[str, Any]:
    """A `backends:` entry for a RawServer."""
    return {"id": backend_id, "url": server.url, "engine": "vllm", "models": [MODEL], **extra}


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A small chat request body for MODEL."""
    messages = [{"role": "user", "content": "hi"}]
    return {"model": MODEL, "messages": messages, "stream": stream, **extra}


def error_of(body: bytes) -> dict[str, Any]:
    """The error object of an OpenAI-shaped error body (its four keys checked)."""
    error: dict[str, Any] = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def sse_events(raw: bytes) -> list[Any]:
    """The parsed `data:` payloads of a whole SSE body (`[DONE]` as the string)."""
    lines = raw.decode().splitlines()
    return parsed([line[5:].lstrip(" ") for line in lines if line.startswith("data:")])


@dataclass
class LoopGateway:
    """A running gateway: its URL, its container and a client for it."""

    url: str
    deps: Deps
    client: httpx.AsyncClient

    async def chat(self, stream: bool = False, **extra: Any) -> httpx.Response:
        """POST a chat request and read the whole response."""
        return await self.client.post("/v1/chat/completions", json=chat(stream, **extra))

    async def metric_lines(self, prefix: str) -> list[str]:
        """The exposition lines starting with `prefix`."""
        text = (await self.client.get("/metrics")).text
        return [line for line in text.splitlines() if line.startswith(prefix)]


@contextlib.asynccontextmanager
async def loop_gateway(
    backends: Sequence[Mapping[str, Any]], **sections: Any
) -> AsyncIterator[LoopGateway]:
    """Start a gateway over `backends:` entries (other config sections by keyword)."""
    settings = settings_from_mapping({"backends": list(backends), **sections})
    deps = build_deps(settings)
    sock = bound_socket()
    config = uvicorn.Config(
        GatewayApp(deps), lifespan="off", http="httptools", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    deps.resize_index(force=True)
    await deps.index.start()
    deps.started = True
    url = f"http://127.0.0.1:{port_of(sock)}"
    client = httpx.AsyncClient(base_url=url, timeout=30)
    try:
        yield LoopGateway(url, deps, client)
    finally:
        await client.aclose()
        server.should_exit = True
        await serving
        await deps.close()
        sock.close()


@pytest.fixture
async def raw_servers() -> AsyncIterator[Any]:
    """Factory: `await raw_servers(handler, ...)` -> started RawServers, stopped afterwards
    (import it into a test module to use it there)."""
    started: list[RawServer] = []

    async def make(*handlers: Handler, tls: Any = None) -> list[RawServer]:
        for handler in handlers:
            started.append(await RawServer(handler).start(tls=tls))
        return started[-len(handlers) :]

    yield make
    for server in started:
        await server.stop()
