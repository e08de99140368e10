"""Every Prometheus collector of the gateway, registered on an injected registry."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.fleet.registry import Fleet
    from gateway.prefix.index import PrefixIndex

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip

# Time to first token and end to end: an LLM request takes 10 ms to minutes.
LLM_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5,
    10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip

# Inter-token latency: a few ms on a small model, seconds on an overloaded engine.
ITL_BUCKETS = (
    0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0, 2.5,
)  # fmt: skip

DECISION_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip

TOKEN_KINDS = ("prompt", "completion", "cache_read", "cache_write")
# Reasons of a routing decision: the best-ranked backend held part of the prefix; one did but
# cost or load chose another; none held any of it; the index was degraded (load only).
DECISION_REASONS = ("cache_hit", "load", "cold", "index_degraded")


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family of the catalog: exposed name, type, help and label names."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()


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


class TierLaneMetrics:
    """Pre-resolved children of one (tier, lane): latencies, outcomes, failovers."""

    __slots__ = ("_labels", "_outcomes", "_parent", "e2e", "failovers", "itl", "ttft")

    def __init__(self, metrics: GatewayMetrics, tier: str, lane: str) -> None:
        self._labels = (tier, lane)
        self._parent = metrics.requests_by_outcome
        self._outcomes: dict[tuple[str, str], Counter] = {}
        self.ttft = metrics.request_ttft.labels(tier, lane)
        self.itl = metrics.request_itl.labels(tier, lane)
        self.e2e = metrics.request_e2e.labels(tier, lane)
        self.failovers = metrics.failovers.labels(tier, lane)

    def outcome(self, status_class: str, reason: str) -> Counter:
        """The outcome counter's child (reasons come from a fixed vocabulary)."""
        key = (status_class, reason)
        child = self._outcomes.get(key)
        if child is None:
            child = self._parent.labels(*self._labels, status_class, reason)
            self._outcomes[key] = child
        return child


class TenantMetrics:
    """Token and cost totals of one (tenant, tier, model), exported at scrape time.

    Plain sums on the request path (the event loop is the only writer), read by
    `AccountingCollector` as counters: six label children's locks cost more per request.
    """

    __slots__ = ("cache_read", "cache_write", "completion", "cost", "labels", "prompt", "savings")

    def __init__(self, tenant: str, tier: str, model: str) -> None:
        self.labels = (tenant, tier, model)
        self.prompt = self.completion = self.cache_read = self.cache_write = 0
        self.cost = self.savings = 0.0

    def charged(
        self,
        prompt: int,
        completion: int,
        cache_read: int | None,
        cache_write: int | None,
        cost_usd: float | None,
        savings_usd: float | None,
    ) -> None:
        """Count one answered request's tokens and price."""
        self.prompt += prompt
        self.completion += completion
        if cache_read is not None:
            self.cache_read += cache_read
        if cache_write is not None:
            self.cache_write += cache_write
        if cost_usd is not None:
            self.cost += cost_usd
        if savings_usd:
            self.savings += savings_usd


class AccountingCollector(Collector):
    """Tokens, cost and cache savings per tenant, tier and model, read at scrape time."""

    LABELS = ("tenant", "tier", "model")
    FAMILIES: ClassVar[tuple[Family, ...]] = (
        Family(
            "gateway_tokens_total", "counter",
            "Tokens of answered requests from the backends' usage: prompt, completion, "
            "cache_read (reported cached), cache_write (newly cached).",
            ("kind", *LABELS),
        ),
        Family(
            "gateway_cost_usd_total", "counter",
            "What answered requests cost at the configured `pricing` (USD).", LABELS,
        ),
        Family(
            "gateway_cache_savings_usd_total", "counter",
            "What cache reads saved against the input price (USD).", LABELS,
        ),
    )  # fmt: skip

    def __init__(self, tenants: dict[tuple[str, str, str], TenantMetrics]) -> None:
        self._tenants = tenants

    def collect(self) -> Iterator[Metric]:
        """Three counter families."""
        tokens, cost, savings = _families(self.FAMILIES)
        for found in list(self._tenants.values()):
            labels = list(found.labels)
            tokens.add_metric(["prompt", *labels], found.prompt)
            tokens.add_metric(["completion", *labels], found.completion)
            tokens.add_metric(["cache_read", *labels], found.cache_read)
            tokens.add_metric(["cache_write", *labels], found.cache_write)
            cost.add_metric(labels, found.cost)
            savings.add_metric(labels, found.savings)
        yield from (tokens, cost, savings)


class DecisionMetrics:
    """Pre-resolved routing-decision children of one policy."""

    __slots__ = ("_by_reason", "time")

    def __init__(self, metrics: GatewayMetrics, policy: str) -> None:
        self.time = metrics.routing_decision.labels(policy)
        self._by_reason = {r: metrics.routing_decisions.labels(policy, r) for r in DECISION_REASONS}

    def decided(
        self, elapsed_s: float, chosen: str | None, matches: dict[str, int], index_ok: bool
    ) -> None:
        """Count one decision by why it went where it did, and time it."""
        self.time.observe(elapsed_s)
        if not index_ok:
            reason = "index_degraded"
        elif not matches:
            reason = "cold"
        elif chosen is not None and matches.get(chosen, 0) > 0:
            reason = "cache_hit"
        else:
            reason = "load"
        self._by_reason[reason].inc()


class CalibrationCollector(Collector):
    """What the gateway learned about each backend, beside the configured starting point, and
    the engine's own gauges as last polled.

    Read from the fleet at scrape time, so learning costs the request path nothing.
    """

    PER_MODEL = ("backend", "model", "source")
    FAMILIES: ClassVar[tuple[Family, ...]] = (
        Family(
            "gateway_backend_bytes_per_token", "gauge",
            "Rendered prompt bytes per engine token (learned from usage.prompt_tokens).", PER_MODEL,
        ),
        Family(
            "gateway_backend_prefill_tokens_per_second", "gauge",
            "Uncached prompt tokens prefilled per second (learned from time to first byte).",
            PER_MODEL,
        ),
        Family(
            "gateway_backend_decode_seconds_per_token", "gauge",
            "Inter-token latency of a lone request (learned from streamed decodes).", PER_MODEL,
        ),
        Family(
            "gateway_backend_decode_batch_slope", "gauge",
            "Extra inter-token latency per additional running request, as a fraction.", PER_MODEL,
        ),
        Family(
            "gateway_backend_kv_capacity_tokens", "gauge",
            "KV cache capacity in tokens, as configured and as the engine reports it.",
            ("backend", "source"),
        ),
        Family(
            "gateway_backend_engine_running", "gauge",
            "Requests the engine said it was running, as last polled from its metrics.",
            ("backend",),
        ),
        Family(
            "gateway_backend_engine_waiting", "gauge",
            "Requests the engine said were waiting, as last polled from its metrics.",
            ("backend",),
        ),
        Family(
            "gateway_backend_engine_kv_usage", "gauge",
            "The engine's KV cache usage (0..1), as last polled (absent if it reports none).",
            ("backend",),
        ),
    )  # fmt: skip

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def collect(self) -> Iterator[Metric]:
        """One family per learned quantity (`source` tells configured from learned)."""
        ratio, speed, itl, slope, kv, running, waiting, kv_usage = _families(self.FAMILIES)
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
            engine = backend.state.engine
            if engine is not None:
                running.add_metric([backend.id], engine.running)
                waiting.add_metric([backend.id], engine.waiting)
                if engine.kv_usage is not None:
                    kv_usage.add_metric([backend.id], engine.kv_usage)
        yield from (ratio, speed, itl, slope, kv, running, waiting, kv_usage)


def _families(families: Iterable[Family]) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """Empty metric families of `families`, in order, to add samples to."""
    made: list[GaugeMetricFamily | CounterMetricFamily] = []
    for family in families:
        if family.kind == "counter":
            name = family.name.removesuffix("_total")
            made.append(CounterMetricFamily(name, family.help, labels=family.labels))
        else:
            made.append(GaugeMetricFamily(family.name, family.help, labels=family.labels))
    return made


class GatewayMetrics:
    """The gateway's metric catalog."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.families: list[Family] = []
        counter, gauge, histogram = self._counter, self._gauge, self._histogram
        self.requests = counter(
            "gateway_requests", "Requests answered, by route and HTTP status.", ("route", "status")
        )
        self.request_duration = histogram(
            "gateway_request_duration_seconds", "Time from request received to last byte sent.",
            ("route",), LATENCY_BUCKETS,
        )  # fmt: skip
        self.ttft = histogram(
            "gateway_time_to_first_byte_seconds",
            "Time from request received to the first response byte relayed from a backend.",
            ("route",), LATENCY_BUCKETS,
        )  # fmt: skip
        self.requests_by_outcome = counter(
            "gateway_requests_by_outcome",
            "Inference requests by tier, lane, status class (2xx, 4xx, 5xx; 499 client gone) "
            "and reason (ok, an error code of the gateway, upstream_error, stream_broken ...).",
            ("tier", "lane", "status_class", "reason"),
        )
        self.request_ttft = histogram(
            "gateway_request_ttft_seconds",
            "Streams: time from request received to the first event relayed (time to first "
            "token, queueing and failover included).",
            ("tier", "lane"), LLM_BUCKETS,
        )  # fmt: skip
        self.request_itl = histogram(
            "gateway_request_itl_seconds",
            "Streams: mean inter-token latency of a request (time after its first event over "
            "its completion tokens after the first).",
            ("tier", "lane"), ITL_BUCKETS,
        )  # fmt: skip
        self.request_e2e = histogram(
            "gateway_request_e2e_seconds",
            "Inference requests: time from request received to the end of the answer.",
            ("tier", "lane"), LLM_BUCKETS,
        )  # fmt: skip
        self.failovers = counter(
            "gateway_failovers",
            "Attempts on a further backend after one failed before its first byte.",
            ("tier", "lane"),
        )
        self.upstream_attempts = counter(
            "gateway_upstream_attempts",
            "Attempts to send a request to a backend, by outcome.", ("backend", "outcome"),
        )  # fmt: skip
        self.client_disconnects = counter(
            "gateway_client_disconnects",
            "Requests whose client went away before the end.", ("route",),
        )  # fmt: skip
        self.stream_errors = counter(
            "gateway_stream_errors",
            "Streams that failed after the response had started.", ("backend",),
        )  # fmt: skip
        self.backend_in_flight = gauge(
            "gateway_backend_in_flight",
            "Requests the gateway has in flight to each backend.", ("backend",),
        )  # fmt: skip
        self.backend_healthy = gauge(
            "gateway_backend_healthy",
            "1 when the backend passes health checks, else 0.", ("backend",),
        )  # fmt: skip
        self.routing_decision = histogram(
            "gateway_routing_decision_seconds",
            "Time to hash the prompt, look up the index and rank backends.",
            ("policy",), DECISION_BUCKETS,
        )  # fmt: skip
        self.routing_decisions = counter(
            "gateway_routing_decisions",
            "Routing decisions by policy and reason: cache_hit (the best-ranked backend holds "
            "part of the prefix), load (one does, another was chosen), cold (none does), "
            "index_degraded (load only).",
            ("policy", "reason"),
        )
        self.cached_tokens_predicted = counter(
            "gateway_cached_tokens_predicted",
            "Prompt tokens the index predicted the chosen backend held in cache.", ("backend",),
        )  # fmt: skip
        self.cached_tokens_reported = counter(
            "gateway_cached_tokens_reported",
            "Cached prompt tokens the backend reported in usage (same requests as predicted).",
            ("backend",),
        )
        self.index_corrections = counter(
            "gateway_index_corrections",
            "Times a backend reported less cache than predicted (its entries then age out sooner).",
            ("backend",),
        )
        self.backend_restarts = counter(
            "gateway_backend_restarts",
            "Backend restarts seen (their cache entries forgotten).", ("backend",),
        )  # fmt: skip
        self.index_degraded = gauge(
            "gateway_index_degraded",
            "1 while the cache-location index is unreachable and routing uses load only.",
        )
        self.load_exchange_replicas = gauge(
            "gateway_load_exchange_replicas",
            "Other gateway replicas whose load the last exchange read (0 after a failure).",
        )
        self.load_exchange_failures = counter(
            "gateway_load_exchange_failures",
            "Load exchange calls that failed (others' load then comes from engine gauges only).",
        )
        self.admission_rejections = counter(
            "gateway_admission_rejections",
            "Requests refused by admission: over a tenant limit or out of queue time.",
            ("tier", "tenant", "reason"),
        )
        self.limits_degraded = gauge(
            "gateway_limits_degraded",
            "1 while Redis fails and each replica holds only its share of every tenant limit.",
        )
        self.queue_depth = gauge(
            "gateway_admission_queue_depth",
            "Requests waiting for a backend with room, per tier.", ("tier",),
        )  # fmt: skip
        self.queue_wait = histogram(
            "gateway_admission_queue_wait_seconds",
            "Time requests waited in the admission queue (admitted or not), per tier.",
            ("tier",), LATENCY_BUCKETS,
        )  # fmt: skip
        self._tenants: dict[tuple[str, str, str], TenantMetrics] = {}
        self.registry.register(AccountingCollector(self._tenants))
        self.families += [
            *AccountingCollector.FAMILIES,
            *CalibrationCollector.FAMILIES,
            *IndexCounterCollector.FAMILIES,
            *BreakerCollector.FAMILIES,
            *ServerMetrics.FAMILIES,
        ]
        self._routes: dict[str, RouteMetrics] = {}
        self._tier_lanes: dict[tuple[str, str], TierLaneMetrics] = {}
        self._attempt_children: dict[tuple[str, str], Counter] = {}
        self._breakers: BreakerCollector | None = None

    def _counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        self.families.append(Family(name + "_total", "counter", help, tuple(labels)))
        return Counter(name, help, labels, registry=self.registry)

    def _gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        self.families.append(Family(name, "gauge", help, tuple(labels)))
        return Gauge(name, help, labels, registry=self.registry)

    def _histogram(
        self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Histogram:
        self.families.append(Family(name, "histogram", help, tuple(labels)))
        return Histogram(name, help, labels, buckets=buckets, registry=self.registry)

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

    def tier_lane(self, tier: str, lane: str) -> TierLaneMetrics:
        """Metrics of one configured tier and lane, created once."""
        key = (tier, lane)
        found = self._tier_lanes.get(key)
        if found is None:
            found = self._tier_lanes[key] = TierLaneMetrics(self, tier, lane)
        return found

    def tenant(self, tenant: str, tier: str, model: str) -> TenantMetrics:
        """Token and cost metrics of one configured tenant, tier and served model, created once."""
        key = (tenant, tier, model)
        found = self._tenants.get(key)
        if found is None:
            found = self._tenants[key] = TenantMetrics(tenant, tier, model)
        return found

    def decisions(self, policy: str) -> DecisionMetrics:
        """Routing-decision metrics of one policy."""
        return DecisionMetrics(self, policy)

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
    """The cache-location index's counters and (where it keeps them) its entries, read from
    the live index at scrape time."""

    ENTRIES = Family(
        "gateway_index_entries", "gauge",
        "Prefix blocks the index holds per backend (memory index only; Redis keeps its own).",
        ("backend",),
    )  # fmt: skip
    FAMILIES: ClassVar[tuple[Family, ...]] = (
        *(Family(f"gateway_index_{name}_total", "counter", doc) for name, doc in INDEX_COUNTERS),
        ENTRIES,
    )

    def __init__(self, index: PrefixIndex) -> None:
        self._index = index

    def collect(self) -> Iterator[Metric]:
        """One counter family per index counter."""
        counters = self._index.counters
        for name, documentation in INDEX_COUNTERS:
            value = getattr(counters, name, None)
            if isinstance(value, int):
                yield CounterMetricFamily(f"gateway_index_{name}", documentation, value=value)
        entries = getattr(self._index, "entries", None)
        if callable(entries):
            family = GaugeMetricFamily(self.ENTRIES.name, self.ENTRIES.help, labels=["backend"])
            for backend in self._index.staleness.backends():
                family.add_metric([backend], entries(backend))
            yield family


class ServerMetrics:
    """The HTTP server's own counters: surprises caught at the boundary, refused clients."""

    FAMILIES: ClassVar[tuple[Family, ...]] = (
        Family(
            "gateway_unexpected_errors_total", "counter",
            "Exceptions no handler expected, answered as a 500 (or an in-band error).", ("route",),
        ),
        Family(
            "gateway_client_refusals_total", "counter",
            "Connections or requests refused by the server: timeouts, size caps, malformed "
            "requests, connection and request caps.", ("reason",),
        ),
    )  # fmt: skip

    def __init__(self, registry: CollectorRegistry) -> None:
        errors, refused = self.FAMILIES
        self.unexpected_errors = Counter(
            errors.name.removesuffix("_total"), errors.help, errors.labels, registry=registry
        )
        self.refused = Counter(
            refused.name.removesuffix("_total"), refused.help, refused.labels, registry=registry
        )


class BreakerCollector(Collector):
    """Each backend's circuit-breaker state and how often it opened, read at scrape time."""

    STATES = ("closed", "open", "half_open")
    FAMILIES: ClassVar[tuple[Family, ...]] = (
        Family(
            "gateway_backend_circuit_state", "gauge",
            "1 for the circuit breaker's current state (closed, open, half_open), else 0.",
            ("backend", "state"),
        ),
        Family(
            "gateway_backend_circuit_opens_total", "counter",
            "Times the backend's circuit breaker opened.", ("backend",),
        ),
    )  # fmt: skip

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        """A state set (1 for the current state) and an opens counter per backend."""
        state, opens = _families(self.FAMILIES)
        now = time.monotonic()
        for backend in self.fleet.backends:
            breaker = backend.state.breaker
            current = breaker.state(now).value
            for name in self.STATES:
                state.add_metric([backend.id, name], 1.0 if name == current else 0.0)
            opens.add_metric([backend.id], breaker.opened)
        yield from (state, opens)


def catalog(metrics: GatewayMetrics) -> list[Family]:
    """Every family of the catalog, by name, with type and help as the registry exposes them."""
    exposed = {m.name: m for m in metrics.registry.collect()}
    families = []
    for family in sorted(metrics.families, key=lambda f: f.name):
        # The registry's own view wins (counter names carry no `_total` there).
        seen = exposed.get(family.name) or exposed.get(family.name.removesuffix("_total"))
        kind = seen.type if seen is not None else family.kind
        help = seen.documentation if seen is not None else family.help
        families.append(Family(family.name, kind, help, family.labels))
    return families


def catalog_markdown(metrics: GatewayMetrics) -> str:
    """docs/metrics.md: the catalog as a Markdown table."""
    lines = [
        "# Metrics catalog",
        "",
        "Generated from `gateway/metrics.py` by `scripts/metrics_doc.py`; a test checks that this",
        "file matches the code. Counters are listed by their exposed `_total` name; histograms",
        "also expose `_bucket`, `_sum` and `_count`.",
        "",
        "| name | type | labels | help |",
        "|---|---|---|---|",
    ]
    for family in catalog(metrics):
        labels = ", ".join(f"`{label}`" for label in family.labels) or "—"
        help = family.help.replace("|", "\\|")
        lines.append(f"| `{family.name}` | {family.kind} | {labels} | {help} |")
    return "\n".join(lines) + "\n"
