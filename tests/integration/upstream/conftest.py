"""Fixtures for the upstream client tests: scripted raw servers and clients closed afterwards.

Every async test here runs twice, on asyncio's loop and on uvloop (what the gateway runs on).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import uvloop

from gateway.proxy.h1client import H1Upstream
from tests.integration.upstream.rawserver import Handler, RawServer, keep_alive


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await raw_server(handler, host="127.0.0.1", tls=None)` -> a started RawServer."""
    started: list[RawServer] = []

    async def make(
        handler: Handler = keep_alive, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> RawServer:
        server = await RawServer(handler).start(host, tls)
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
async def h1() -> AsyncIterator[Callable[..., H1Upstream]]:
    """Factory: `h1(**knobs)` -> an H1Upstream closed at the end of the test."""
    clients: list[H1Upstream] = []

    def make(**knobs: Any) -> H1Upstream:
        knobs.setdefault("max_connections_per_origin", 8)
        knobs.setdefault("connect_timeout_s", 5.0)
        knobs.setdefault("read_timeout_s", 10.0)
        client = H1Upstream(**knobs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
