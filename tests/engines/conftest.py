"""The real-vLLM tier: collected only when test-engines.sh names the engines python and model."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.engines_fleet import MODEL_ENV, PYTHON_ENV, EngineOptions, VllmFleet, samples
from tests.support.harness import GatewayHandle, start_gateway

if not (os.environ.get(PYTHON_ENV) and os.environ.get(MODEL_ENV)):
    collect_ignore_glob = ["test_*.py"]  # `make test`: this tier runs under `make test-engines`

FLEET_KEY = pytest.StashKey[VllmFleet]()
GATEWAY_READY_S = 60.0


@pytest.fixture(scope="session")
def vllm_fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmFleet]:
    """Two real vLLM servers for the whole session, stopped by pid at the end."""
    options = EngineOptions.from_env()
    with VllmFleet(2, options, tmp_path_factory.mktemp("vllm-logs")) as fleet:
        request.session.stash[FLEET_KEY] = fleet
        yield fleet


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failing test of this tier shows the tail of every vLLM log."""
    outcome = yield
    report = outcome.get_result()
    fleet = item.session.stash.get(FLEET_KEY, None)
    if report.failed and fleet is not None:
        report.sections.append(("vLLM log tails", fleet.logs()))


@pytest.fixture(scope="session")
def run_key() -> str:
    """A key unique to this session, so no prompt is already cached in the engines."""
    return uuid.uuid4().hex[:8]


def backend_entries(fleet: VllmFleet) -> list[dict[str, Any]]:
    """The gateway's `backends:` for the fleet: vLLM engines that report cached tokens."""
    return [
        {
            "id": server.name,
            "url": server.url,
            "engine": "vllm",
            "models": [fleet.options.served_model],
            "reports_cached_tokens": True,
            "priority_scheduling": True,
        }
        for server in fleet.servers
    ]


def wait_gateway_ready(handle: GatewayHandle, backends: list[str]) -> None:
    """Poll the gateway's /metrics until every backend is healthy (bounded by a deadline)."""
    deadline = time.monotonic() + GATEWAY_READY_S
    healthy: dict[str, float] = {}
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            text = client.get(handle.url + "/metrics", timeout=5.0).text
            healthy = {
                labels["backend"]: value
                for labels, value in samples(text, "gateway_backend_healthy")
            }
            if all(healthy.get(b) == 1.0 for b in backends):
                return
            time.sleep(0.2)
    raise AssertionError(f"gateway did not see the engines healthy: {healthy}")


@pytest.fixture(scope="module")
def engine_gateway(vllm_fleet: VllmFleet) -> Iterator[GatewayHandle]:
    """A gateway of this test module's own over both engines (fresh index and calibration)."""
    handle = start_gateway(
        backend_entries(vllm_fleet), health={"interval_s": 0.5, "load_interval_s": 0.5}
    )
    try:
        wait_gateway_ready(handle, [s.name for s in vllm_fleet.servers])
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client with a timeout fit for a CPU engine."""
    with httpx.Client(timeout=120.0) as client:
        yield client
