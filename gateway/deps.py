"""One container of the live objects a running gateway needs, built from settings or by hand."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.fleet.health import HealthPoller
from gateway.fleet.registry import Backend, Fleet
from gateway.metrics import GatewayMetrics
from gateway.proxy.forward import Forwarder
from gateway.proxy.upstream import HttpxUpstream, UpstreamClient
from gateway.routing.round_robin import RoundRobinRouter
from gateway.settings import GatewaySettings


@dataclass
class Deps:
    """Everything a request handler touches; tests may assemble it themselves."""

    settings: GatewaySettings
    fleet: Fleet
    client: UpstreamClient
    metrics: GatewayMetrics
    router: RoundRobinRouter
    forwarder: Forwarder
    health: HealthPoller
    started: bool = False

    async def start(self) -> None:
        """Start background work (health polling)."""
        await self.health.poll_once()
        self.health.start()
        self.started = True

    async def close(self) -> None:
        """Stop background work and close connections."""
        await self.health.close()
        await self.client.aclose()
        self.started = False


def build_deps(settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> Deps:
    """Assemble the production dependency container from settings."""
    fleet = Fleet.from_settings(settings.backends)
    metrics = metrics if metrics is not None else GatewayMetrics()
    upstream = settings.upstream
    client = HttpxUpstream(
        max_connections=upstream.max_connections_per_backend * len(fleet.backends),
        connect_timeout_s=upstream.connect_timeout_s,
        read_timeout_s=upstream.read_timeout_s,
        keepalive_expiry_s=upstream.keepalive_expiry_s,
    )

    def health_changed(backend: Backend) -> None:
        metrics.backend_healthy.labels(backend.id).set(1 if backend.state.healthy else 0)

    for backend in fleet.backends:
        health_changed(backend)
    return Deps(
        settings=settings,
        fleet=fleet,
        client=client,
        metrics=metrics,
        router=RoundRobinRouter(),
        forwarder=Forwarder(client, metrics, upstream),
        health=HealthPoller(fleet, client, settings.health, on_change=health_changed),
    )
