"""A simulated fleet served over loopback in a background thread, shared by these tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from gateway.sim.config import SimBackendConfig
from gateway.sim.fleet import SimFleetThread
from gateway.sim.server import SimBackend
from tests.integration.sim.support import FleetHandle

FAST = SimBackendConfig(time_scale=0.001)


@pytest.fixture(scope="package")
def sim_fleet() -> Iterator[FleetHandle]:
    backends = {
        "vllm": SimBackend(dataclasses.replace(FAST, backend_id="sim-0", flavor="vllm")),
        "sglang": SimBackend(dataclasses.replace(FAST, backend_id="sim-1", flavor="sglang")),
        "tgi": SimBackend(dataclasses.replace(FAST, backend_id="sim-2", flavor="tgi")),
        # real-time decode (20 ms/token): streams outlive the client's disconnect
        "slow": SimBackend(SimBackendConfig(backend_id="sim-3", time_scale=1.0)),
        # 1000 prefill tokens/s: a few hundred tokens keep the prefill queue busy for seconds
        "queue": SimBackend(
            SimBackendConfig(backend_id="sim-4", time_scale=1.0, prefill_tokens_per_s=1000.0)
        ),
        # TGI 2.x (its /info carries max_batch_total_tokens), a capacity of 4321 blocks
        "tgi2": SimBackend(
            dataclasses.replace(
                FAST,
                backend_id="sim-5",
                flavor="tgi",
                tgi_version="2.4.1",
                cache_capacity_blocks=4321,
            )
        ),
        # real-time batched decode, 50 ms a step and 10% more per extra request in the batch
        "batch": SimBackend(
            SimBackendConfig(
                backend_id="sim-6",
                time_scale=1.0,
                decode_s_per_token=0.05,
                decode_batch_slowdown=0.1,
            )
        ),
    }
    with SimFleetThread(list(backends.values())) as fleet:
        yield FleetHandle(backends, dict(zip(backends, fleet.urls, strict=True)))


@pytest.fixture(autouse=True)
def _reset_faults(sim_fleet: FleetHandle) -> Iterator[None]:
    yield
    for backend in sim_fleet.backends.values():
        backend.set_faults(reset=True)
