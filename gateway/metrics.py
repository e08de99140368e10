"""Every Prometheus collector of the gateway, registered on an injected registry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.fleet.registry import Fleet
    from gateway.prefix.index import PrefixIndex

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip


DECISION_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip


class RouteMetrics:
    """Pre-resolved children for one route, so the hot path does no label lookups."""

    __slots__ = ("_by_status", "_requests", "_route", "duration", "ttft")

    def __init__(self, metrics: GatewayMetrics, route: str) -> None:
        self._route = route
        self._requests = metrics.requests
        self._by_status: dict[int, Counter] = {}
        self.duration = metrics.request_duration.labels(route)
        self.ttft = metrics.ttft.labels(route)

    def finished(self, status: int, duration_s: float) -> None:
        """Count a finished request and its duration."""
        child = self._by_status.get(status)
        if child is None:
            child = self._requests.labels(self._route, str(status))
            self._by_status[status] = child
        child.inc()
        self.duration.observe(duration_s)


class CalibrationCollector(Collector):
    """What the gateway learned about each backend, beside the configured starting point.

    Read from the fleet at scrape time, so learning costs the request path nothing.
    """

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def collect(self) -> Iterator[Metric]:
        """One family per learned quantity; `source` tells configured from learned."""
        per_model = ["backend", "model", "source"]
        ratio = GaugeMetricFamily(
            "gateway_backend_bytes_per_token",
            "Rendered prompt bytes per engine token (learned from usage.prompt_tokens).",
            labels=per_model,
        )
        speed = GaugeMetricFamily(
            "gateway_backend_prefill_tokens_per_second",
            "Uncached prompt tokens prefilled per second (learned from time to first byte).",
            labels=per_model,
        )
        itl = GaugeMetricFamily(
            "gateway_backend_decode_seconds_per_token",
            "Inter-token latency of a lone request (learned from streamed decodes).",
            labels=per_model,
        )
        slope = GaugeMetricFamily(
            "gateway_backend_decode_batch_slope",
            "Extra inter-token latency per additional running request, as a fraction.",
            labels=per_model,
        )
        kv = GaugeMetricFamily(
            "gateway_backend_kv_capacity_tokens",
            "KV cache capacity in tokens, as configured and as the engine reports it.",
            labels=["backend", "source"],
        )
        for backend in self._fleet.backends:
            calibration = backend.calibration
            defaults = calibration.defaults
            for model in backend.settings.models:
                labels = [backend.id, model]
                lone_itl = calibration.itl_s(model, 1.0)
                ratio.add_metric([*labels, "configured"], defaults.bytes_per_token)
                ratio.add_metric([*labels, "learned"], calibration.bytes_per_token(model))
                speed.add_metric([*labels, "configured"], defaults.prefill_tokens_per_s)
                speed.add_metric([*labels, "learned"], calibration.prefill_tokens_per_s(model))
                itl.add_metric([*labels, "configured"], defaults.itl_s)
                itl.add_metric([*labels, "learned"], lone_itl)
                slope.add_metric([*labels, "configured"], defaults.itl_batch_slope)
                slope.add_metric(
                    [*labels, "learned"], calibration.itl_s(model, 2.0) / lone_itl - 1.0
                )
            kv.add_metric([backend.id, "configured"], defaults.kv_cache_tokens)
            if calibration.engine_kv_tokens is not None:
                kv.add_metric([backend.id, "engine"], calibration.engine_kv_tokens)
        yield from (ratio, speed, itl, slope, kv)


class GatewayMetrics:
    """The gateway's metric catalog."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Requests answered, by route and HTTP status.",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "gateway_request_duration_seconds", "Time from request received to last byte sent.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "gateway_time_to_first_byte_seconds",
            "Time from request received to the first response byte relayed from a backend.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_attempts = Counter(
            "gateway_upstream_attempts", "Attempts to send a request to a backend, by outcome.",
            ["backend", "outcome"], registry=r,
        )  # fmt: skip
        self.client_disconnects = Counter(
            "gateway_client_disconnects", "Requests whose client went away before the end.",
            ["route"], registry=r,
        )  # fmt: skip
        self.stream_errors = Counter(
            "gateway_stream_errors", "Streams that failed after the response had started.",
            ["backend"], registry=r,
        )  # fmt: skip
        self.backend_in_flight = Gauge(
            "gateway_backend_in_flight", "Requests the gateway has in flight to each backend.",
            ["backend"], registry=r,
        )  # fmt: skip
        self.backend_healthy = Gauge(
            "gateway_backend_healthy", "1 when the backend passes health checks, else 0.",
            ["backend"], registry=r,
        )  # fmt: skip
        self.routing_decision = Histogram(
            "gateway_routing_decision_seconds",
            "Time to hash the prompt, look up the index and rank backends.",
            ["policy"], buckets=DECISION_BUCKETS, registry=r,
        )  # fmt: skip
        self.cached_tokens_predicted = Counter(
            "gateway_cached_tokens_predicted",
            "Prompt tokens the index predicted the chosen backend held in cache.",
            ["backend"], registry=r,
        )  # fmt: skip
        self.cached_tokens_reported = Counter(
            "gateway_cached_tokens_reported",
            "Cached prompt tokens the backend reported in usage (same requests as predicted).",
            ["backend"], registry=r,
        )  # fmt: skip
        self.index_corrections = Counter(
            "gateway_index_corrections",
            "Times a backend reported less cache than predicted (its entries then age out sooner).",
            ["backend"], registry=r,
        )  # fmt: skip
        self.backend_restarts = Counter(
            "gateway_backend_restarts", "Backend restarts seen (their cache entries forgotten).",
            ["backend"], registry=r,
        )  # fmt: skip
        self.index_degraded = Gauge(
            "gateway_index_degraded",
            "1 while the cache-location index is unreachable and routing uses load only.",
            registry=r,
        )  # fmt: skip
        self.load_exchange_replicas = Gauge(
            "gateway_load_exchange_replicas",
            "Other gateway replicas whose load the last exchange read (0 after a failure).",
            registry=r,
        )  # fmt: skip
        self.load_exchange_failures = Counter(
            "gateway_load_exchange_failures",
            "Load exchange calls that failed (others' load then comes from engine gauges only).",
            registry=r,
        )  # fmt: skip
        self.admission_rejections = Counter(
            "gateway_admission_rejections",
            "Requests refused by admission: over a tenant limit or out of queue time.",
            ["tier", "tenant", "reason"], registry=r,
        )  # fmt: skip
        self.limits_degraded = Gauge(
            "gateway_limits_degraded",
            "1 while Redis fails and each replica holds only its share of every tenant limit.",
            registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "gateway_admission_queue_depth",
            "Requests waiting for a backend with room, per tier.",
            ["tier"], registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "gateway_admission_queue_wait_seconds",
            "Time requests waited in the admission queue (admitted or not), per tier.",
            ["tier"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._routes: dict[str, RouteMetrics] = {}
        self._attempt_children: dict[tuple[str, str], Counter] = {}
        self._breakers: BreakerCollector | None = None

    def watch_fleet(self, fleet: Fleet) -> None:
        """Export what the gateway learns about the fleet's backends."""
        self.registry.register(CalibrationCollector(fleet))

    def exchanged(self, replicas: int, ok: bool) -> None:
        """One load exchange call: how many other replicas it read, or that it failed."""
        self.load_exchange_replicas.set(replicas)
        if not ok:
            self.load_exchange_failures.inc()

    def count_attempt(self, backend: str, outcome: str) -> None:
        """Count one upstream attempt (children cached: this runs on every request)."""
        key = (backend, outcome)
        child = self._attempt_children.get(key)
        if child is None:
            child = self.upstream_attempts.labels(backend, outcome)
            self._attempt_children[key] = child
        child.inc()

    def route(self, route: str) -> RouteMetrics:
        """Metrics of one route, created once."""
        found = self._routes.get(route)
        if found is None:
            found = RouteMetrics(self, route)
            self._routes[route] = found
        return found

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def watch_index(self, index: PrefixIndex) -> None:
        """Export the cache-location index's own counters (read at scrape time)."""
        self.registry.register(IndexCounterCollector(index))

    def watch_breakers(self, fleet: Fleet) -> None:
        """Export the circuit breakers of `fleet`'s backends (the latest fleet given)."""
        if self._breakers is None:
            self._breakers = BreakerCollector(fleet)
            self.registry.register(self._breakers)
        else:
            self._breakers.fleet = fleet


# The index's counters exported as `gateway_index_<name>_total`: (IndexCounters field, help).
INDEX_COUNTERS = (
    ("lookups", "Index lookups asked for (Redis: including those skipped while degraded)."),
    ("lookup_errors", "Index lookups that failed (timeout, connection, error reply, bad reply)."),
    ("lookups_skipped", "Index lookups not sent because the index was degraded."),
    ("records", "Routed prefixes asked to be recorded in the index."),
    ("record_errors", "Index records and truncations that failed."),
    ("records_dropped", "Index records dropped (degraded, or too many in flight)."),
    ("truncates", "Index truncations (a backend reported less cache than predicted)."),
    ("forgets", "Backends forgotten by the index (a restart: a new epoch)."),
    ("timeouts", "Redis calls of the index that hit their hard timeout."),
    ("error_replies", "Redis calls of the index answered with an error (MOVED, OOM, READONLY...)."),
    ("degraded_transitions", "Times the index degraded (routing by load only)."),
    ("recoveries", "Times the index recovered from degraded."),
    ("sync_errors", "Failed syncs of the index's shared backend state."),
)


class IndexCounterCollector(Collector):
    """The cache-location index's counters, read from the live index at scrape time."""

    def __init__(self, index: PrefixIndex) -> None:
        self._index = index

    def collect(self) -> Iterator[Metric]:
        """One counter family per index counter."""
        from prometheus_client.core import CounterMetricFamily

        counters = self._index.counters
        for name, documentation in INDEX_COUNTERS:
            value = getattr(counters, name, None)
            if isinstance(value, int):
                yield CounterMetricFamily(f"gateway_index_{name}", documentation, value=value)


class ServerMetrics:
    """The HTTP server's own counters: surprises caught at the boundary, refused clients."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.unexpected_errors = Counter(
            "gateway_unexpected_errors",
            "Exceptions no handler expected, answered as a 500 (or an in-band error).",
            ["route"], registry=registry,
        )  # fmt: skip
        self.refused = Counter(
            "gateway_client_refusals",
            "Connections or requests refused by the server: timeouts, size caps, malformed "
            "requests, connection and request caps.",
            ["reason"], registry=registry,
        )  # fmt: skip


class BreakerCollector(Collector):
    """Each backend's circuit-breaker state and how often it opened, read at scrape time."""

    STATES = ("closed", "open", "half_open")

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        """A state set (1 for the current state) and an opens counter per backend."""
        import time

        from prometheus_client.core import CounterMetricFamily

        state = GaugeMetricFamily(
            "gateway_backend_circuit_state",
            "1 for the circuit breaker's current state (closed, open, half_open), else 0.",
            labels=["backend", "state"],
        )
        opens = CounterMetricFamily(
            "gateway_backend_circuit_opens",
            "Times the backend's circuit breaker opened.",
            labels=["backend"],
        )
        now = time.monotonic()
        for backend in self.fleet.backends:
            breaker = backend.state.breaker
            current = breaker.state(now).value
            for name in self.STATES:
                state.add_metric([backend.id, name], 1.0 if name == current else 0.0)
            opens.add_metric([backend.id], breaker.opened)
        yield from (state, opens)
