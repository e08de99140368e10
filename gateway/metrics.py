"""Every Prometheus collector of the gateway, registered on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

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
        self._routes: dict[str, RouteMetrics] = {}
        self._attempt_children: dict[tuple[str, str], Counter] = {}

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
