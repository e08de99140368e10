"""Fixtures starting simulated fleets and gateways, stopped at the end of each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.harness import (
    GatewayHandle,
    SimFleetHandle,
    start_gateway,
    start_sim_fleet,
)


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
