"""One container of the live objects a running gateway needs, built from settings or by hand."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.access_log import AccessLog, LaneNames, Ledger
from gateway.accounting import Prices
from gateway.admission.gate import Gate, build_limit_store
from gateway.admission.limits import LimitStore
from gateway.admission.stage import StagedRouter
from gateway.admission.tokens import build_counter
from gateway.fleet.breaker import CircuitBreaker
from gateway.fleet.exchange import LoadExchange
from gateway.fleet.poller import FleetPoller
from gateway.fleet.registry import Backend, Fleet
from gateway.metrics import CalibrationCollector, GatewayMetrics
from gateway.placement import Placer
from gateway.prefix.index import PrefixIndex
from gateway.proxy.forward import Forwarder
from gateway.proxy.h1client import H1Upstream
from gateway.proxy.upstream import UpstreamClient
from gateway.routing.factory import build_router
from gateway.settings import GatewaySettings, HashingSettings, IndexSettings
from gateway.tasks import BackgroundTasks
from gateway.tracing import Tracing, build_tracing

log = logging.getLogger("gateway")

PROBE_CONNECTIONS = 2


@dataclass
class Deps:
    """Everything a request handler touches; tests may assemble it themselves."""

    settings: GatewaySettings
    fleet: Fleet
    client: UpstreamClient
    metrics: GatewayMetrics
    index: PrefixIndex
    placer: Placer
    forwarder: Forwarder
    poller: FleetPoller
    tasks: BackgroundTasks
    probe_client: UpstreamClient
    gate: Gate
    ledger: Ledger
    lanes: LaneNames
    started: bool = False
    index_capacities: dict[str, int] = field(default_factory=dict)
    fleet_collector: CalibrationCollector | None = None
    exchange: LoadExchange | None = None
    tracing: Tracing = field(default_factory=Tracing)

    async def start(self) -> None:
        """Connect the index, take a first look at the fleet, start background polling."""
        self.resize_index(force=True)
        await self.index.start()
        await self.poller.poll_health()
        await self.poller.poll_load()
        self.poller.start()
        if self.exchange is not None:
            await self.exchange.exchange()
            self.exchange.start()
        self.started = True

    async def close(self) -> None:
        """Stop background work and close connections."""
        self.started = False
        await self.poller.close()
        if self.exchange is not None:
            await self.exchange.close()
        await self.tasks.drain()
        await self.gate.store.close()
        await self.index.close()
        await self.client.aclose()
        await self.probe_client.aclose()
        await self.tracing.close()
        if self.ledger.access_log is not None:
            self.ledger.access_log.flush()

    def resize_index(self, force: bool = False) -> None:
        """Size the index by what each backend's cache holds, once learned values moved."""
        capacities = cache_capacities(self.fleet, self.settings.hashing)
        previous = self.index_capacities
        moved = any(
            abs(blocks - previous.get(backend, 0)) > RESIZE_TOLERANCE * blocks
            for backend, blocks in capacities.items()
        )
        if force or moved:
            self.index_capacities = capacities
            self.index.configure_backends(capacities)


# Relative change of a backend's capacity in index blocks worth resizing the index for.
RESIZE_TOLERANCE = 0.05


def cache_capacities(fleet: Fleet, hashing: HashingSettings) -> dict[str, int]:
    """Each backend's KV cache capacity in index blocks, in its calibrated units.

    The engine's capacity (or the configured one) is in its tokens; the index counts blocks
    of rendered bytes, so the backend's learned bytes per token converts one into the other.
    """
    capacities: dict[str, int] = {}
    for backend in fleet.backends:
        calibration = backend.calibration
        ratio = max(calibration.bytes_per_token(m) for m in backend.settings.models)
        tokens_per_block = hashing.block_bytes / ratio
        capacities[backend.id] = max(1, int(calibration.kv_cache_tokens / tokens_per_block))
    return capacities


def build_index(settings: IndexSettings, metrics: GatewayMetrics) -> PrefixIndex:
    """The configured cache-location index."""
    if settings.kind == "redis":
        from gateway.prefix.redis import RedisPrefixIndex

        def degraded_changed(degraded: bool) -> None:
            metrics.index_degraded.set(1 if degraded else 0)
            if degraded:
                log.warning("cache-location index degraded: Redis failing, routing by load")
            else:
                log.warning("cache-location index recovered: Redis reachable again")

        assert settings.redis_url is not None
        return RedisPrefixIndex(
            settings.redis_url,
            key_prefix=settings.key_prefix,
            lookup_timeout_s=settings.lookup_timeout_ms / 1000,
            write_timeout_s=settings.record_timeout_ms / 1000,
            on_degraded_change=degraded_changed,
        )
    from gateway.prefix.memory import MemoryPrefixIndex

    return MemoryPrefixIndex()


def build_exchange(
    settings: IndexSettings, fleet: Fleet, metrics: GatewayMetrics
) -> LoadExchange | None:
    """The replica load exchange, when replicas share a Redis index and it is not turned off."""
    if settings.kind != "redis" or settings.load_exchange_ms <= 0:
        return None
    from gateway.prefix.redis_guard import script_client

    assert settings.redis_url is not None
    timeout_s = settings.record_timeout_ms / 1000
    return LoadExchange(
        script_client(settings.redis_url, max_connections=2, socket_timeout_s=timeout_s),
        fleet,
        key=(settings.key_prefix + "replica-load").encode(),
        replica_id=uuid.uuid4().hex[:16],
        interval_s=settings.load_exchange_ms / 1000,
        timeout_s=timeout_s,
        on_exchange=metrics.exchanged,
    )


def build_deps(settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> Deps:
    """Assemble the production dependency container from settings."""
    fleet = Fleet.from_settings(
        settings.backends, settings.calibration, settings.hashing.bytes_per_token
    )
    metrics = metrics if metrics is not None else GatewayMetrics()
    client, probe_client = _clients(settings)
    index = build_index(settings.index, metrics)
    metrics.watch_index(index)
    exchange = build_exchange(settings.index, fleet, metrics)

    def replicas() -> int:
        return 1 + (exchange.replicas_seen if exchange is not None else 0)

    store = build_limit_store(settings.index, metrics, replicas)
    tasks = BackgroundTasks()
    deps = _assemble(settings, fleet, metrics, client, probe_client, index, tasks, store, exchange)
    deps.tracing = build_tracing(settings.tracing)
    return deps


def _clients(settings: GatewaySettings) -> tuple[UpstreamClient, UpstreamClient]:
    upstream = settings.upstream
    client = H1Upstream(
        max_connections_per_origin=upstream.max_connections_per_backend,
        connect_timeout_s=upstream.connect_timeout_s,
        read_timeout_s=upstream.read_timeout_s,
        keepalive_expiry_s=upstream.keepalive_expiry_s,
    )
    # Probes get a pool of their own, so they never queue behind traffic for a connection.
    probe_client = H1Upstream(
        max_connections_per_origin=PROBE_CONNECTIONS,
        connect_timeout_s=upstream.connect_timeout_s,
        read_timeout_s=settings.health.timeout_s,
        keepalive_expiry_s=upstream.keepalive_expiry_s,
    )
    return client, probe_client


def _configure_upstream(
    settings: GatewaySettings, fleet: Fleet, clients: Sequence[UpstreamClient]
) -> None:
    """TLS options of https:// backends on every client; a breaker per backend (a reused
    backend keeps its own while the breaker settings stay the same)."""
    for backend in fleet.backends:
        item = backend.settings
        if item.url.scheme == "https":
            for client in clients:
                if isinstance(client, H1Upstream):
                    client.configure_tls(
                        item.base_url, ca_file=item.tls_ca_file, server_name=item.tls_server_name
                    )
        breaker = backend.state.breaker
        if breaker.settings != settings.breaker or breaker.name != backend.id:
            backend.state.breaker = CircuitBreaker(settings.breaker, backend.id)


def _assemble(
    settings: GatewaySettings,
    fleet: Fleet,
    metrics: GatewayMetrics,
    client: UpstreamClient,
    probe_client: UpstreamClient,
    index: PrefixIndex,
    tasks: BackgroundTasks,
    store: LimitStore,
    exchange: LoadExchange | None = None,
) -> Deps:
    fleet_collector = CalibrationCollector(fleet)
    metrics.registry.register(fleet_collector)
    upstream = settings.upstream
    _configure_upstream(settings, fleet, (client, probe_client))
    metrics.watch_breakers(fleet)

    def health_changed(backend: Backend) -> None:
        metrics.backend_healthy.labels(backend.id).set(1 if backend.state.healthy else 0)

    def restarted(backend: Backend) -> None:
        metrics.backend_restarts.labels(backend.id).inc()
        tasks.spawn(index.forget(backend.id))

    def resize(_: Backend | None = None) -> None:
        deps.resize_index()  # `deps` is bound below, before polling starts

    for backend in fleet.backends:
        health_changed(backend)
    router = StagedRouter.from_settings(
        build_router(settings.routing, random.Random()), settings.admission
    )
    calibration = settings.calibration
    prices = Prices(settings.pricing)
    access_log = AccessLog(settings.access_log) if settings.access_log.enabled else None
    admission = settings.admission
    deps = Deps(
        settings=settings,
        fleet=fleet,
        client=client,
        metrics=metrics,
        index=index,
        placer=Placer(
            settings.hashing,
            index,
            router,
            metrics,
            tasks,
            calibration.cached_tokens_tolerance,
            counter=build_counter(
                settings.tokenizers,
                [lane.up_to_tokens for lane in admission.lanes if lane.up_to_tokens is not None],
                admission.default_output_tokens,
            ),
        ),
        forwarder=Forwarder(
            client,
            metrics,
            upstream,
            unavailable_retry_s=settings.breaker.cooldown_s,
            prices=prices,
        ),
        poller=FleetPoller(
            fleet,
            probe_client,
            settings.health,
            on_health_change=health_changed,
            on_restart=restarted,
            on_capacity_change=resize,
            after_load_poll=resize,
            discover_cache=calibration.discover_kv_capacity,
        ),
        tasks=tasks,
        probe_client=probe_client,
        gate=Gate.from_settings(settings, store, metrics),
        ledger=Ledger(metrics, prices, access_log),
        lanes=LaneNames(admission.lanes, admission.default_output_tokens),
        fleet_collector=fleet_collector,
        exchange=exchange,
    )
    if exchange is not None:
        exchange.watch(fleet)
    return deps


# Reload: a new container for a new config, sharing what lives across configs.


def reuse_backends(settings: GatewaySettings, known: Mapping[str, Backend]) -> list[Backend]:
    """The configured backends, reusing the object (calibration, state) of each unchanged id.

    New or changed ones are built as the fleet builds them (their tokenizer ratios pooled
    among themselves).
    """
    fresh_settings = [
        item
        for item in settings.backends
        if (same := known.get(item.id)) is None or same.settings != item
    ]
    fresh = Fleet.from_settings(
        fresh_settings, settings.calibration, settings.hashing.bytes_per_token
    ).backends
    built = {backend.id: backend for backend in fresh}
    return [built.get(item.id) or known[item.id] for item in settings.backends]


def rebuild_deps(old: Deps, settings: GatewaySettings, backends: Sequence[Backend]) -> Deps:
    """A container for `settings` over `backends`, sharing `old`'s metrics, index and tasks.

    The index is shared because replicas and in-flight requests rely on it: a change of the
    `index:` section is logged and takes effect at the next start (the load exchange, which
    rides on the index's Redis, is shared too). The upstream clients are
    shared while `upstream:` and `health:` timeouts stay the same.
    """
    if settings.index != old.settings.index:
        log.warning("reload: index settings change only at restart; the index in use stays")
        settings = settings.model_copy(update={"index": old.settings.index})
    same_clients = (
        settings.upstream == old.settings.upstream
        and settings.health.timeout_s == old.settings.health.timeout_s
    )
    client, probe = (old.client, old.probe_client) if same_clients else _clients(settings)
    if old.fleet_collector is not None:
        old.metrics.registry.unregister(old.fleet_collector)
        old.fleet_collector = None
    fleet = Fleet(backends)
    new = _assemble(
        settings,
        fleet,
        old.metrics,
        client,
        probe,
        old.index,
        old.tasks,
        old.gate.store,
        old.exchange,
    )
    new.tracing = old.tracing  # `tracing:` changes take effect at the next start
    return new


async def activate(deps: Deps) -> None:
    """Start a rebuilt container: size the index, a first look at its fleet, polling."""
    deps.resize_index(force=True)
    await deps.poller.poll_health()
    await deps.poller.poll_load()
    deps.poller.start()
    deps.started = True


async def retire(old: Deps, new: Deps, grace_s: float = 0.0) -> None:
    """Stop what only `old` used; its own clients close after `grace_s`.

    Requests in flight keep their references to `old` and finish; the grace is for those
    still reading from `old`'s clients when the upstream settings changed.
    """
    old.started = False
    await old.poller.close()
    kept = {backend.id for backend in new.fleet.backends}
    for backend in old.fleet.backends:
        if backend.id not in kept:
            old.metrics.backend_healthy.remove(backend.id)
    if old.client is not new.client:
        await asyncio.sleep(grace_s)
        await old.client.aclose()
        await old.probe_client.aclose()
