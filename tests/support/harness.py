"""Test harness: simulated backends and a gateway, each on real uvicorn servers over loopback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.app import GatewayApp
from gateway.deps import Deps, build_deps
from gateway.settings import settings_from_mapping
from gateway.sim.config import SimBackendConfig
from gateway.sim.server import SimBackend
from tests.support.serving import ServerThread

MODEL = "sim-llama-8b"


@dataclass
class SimFleetHandle:
    """Running simulated backends and their URLs."""

    backends: list[SimBackend]
    server: ServerThread

    @property
    def urls(self) -> list[str]:
        """Base URLs of the backends, in order."""
        return self.server.urls

    def backend_settings(self, engine: str | None = None, **extra: Any) -> list[dict[str, Any]]:
        """Gateway `backends:` entries pointing at this fleet."""
        return [
            {
                "id": b.backend_id,
                "url": url,
                "engine": engine or b.config.flavor,
                "models": [b.config.model],
                **extra,
            }
            for b, url in zip(self.backends, self.urls, strict=True)
        ]


def start_sim_fleet(n: int, flavor: str = "vllm", **config: Any) -> SimFleetHandle:
    """Start `n` simulated backends of one flavor (fast: time scale defaults to 0)."""
    config.setdefault("time_scale", 0.0)
    backends = [
        SimBackend(SimBackendConfig(backend_id=f"sim-{i}", flavor=flavor, seed=i, **config))  # type: ignore[arg-type]
        for i in range(n)
    ]
    return SimFleetHandle(backends, ServerThread(backends).start())


@dataclass
class GatewayHandle:
    """A running gateway: its URL and its dependency container."""

    url: str
    deps: Deps
    server: ServerThread

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the gateway's event loop."""
        return self.server.call(coro)

    def stop(self) -> None:
        """Close the container and stop the server."""
        self.server.call(self.deps.close())
        self.server.stop()


def start_gateway(backends: Sequence[Mapping[str, Any]], **sections: Any) -> GatewayHandle:
    """Start a gateway over the given `backends:` entries; other config sections by keyword."""
    sections.setdefault("health", {"interval_s": 0.2, "load_interval_s": 0.2})
    settings = settings_from_mapping({"backends": list(backends), **sections})
    deps = build_deps(settings)
    server = ServerThread([GatewayApp(deps)]).start()
    server.call(deps.start())
    return GatewayHandle(server.urls[0], deps, server)
