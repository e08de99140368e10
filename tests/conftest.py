"""Shared fixtures: Redis servers, simulated fleets and gateways, stopped after each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.harness import (
    GatewayHandle,
    SimFleetHandle,
    start_gateway,
    start_sim_fleet,
)
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """`GATEWAY_TEST_REDIS_URL` when the runner (make test) set it, else a server we start."""
    url = os.environ.get("GATEWAY_TEST_REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop, pause and restart."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def unique_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def sim_fleet() -> Iterator[Callable[..., SimFleetHandle]]:
    """Factory: `sim_fleet(n, flavor="vllm", **config)`."""
    started: list[SimFleetHandle] = []

    def make(n: int = 2, flavor: str = "vllm", **config: Any) -> SimFleetHandle:
        handle = start_sim_fleet(n, flavor, **config)
        started.append(handle)
        return handle

    yield make
    for handle in started:
        handle.server.stop()


@pytest.fixture
def gateway() -> Iterator[Callable[..., GatewayHandle]]:
    """Factory: `gateway(backends, **config_sections)`."""
    started: list[GatewayHandle] = []

    def make(backends: Any, **sections: Any) -> GatewayHandle:
        handle = start_gateway(backends, **sections)
        started.append(handle)
        return handle

    yield make
    for handle in started:
        handle.stop()
