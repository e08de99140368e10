"""Report math: percentiles, shares, per-run summaries from backend counters, repeat averages."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.replay import Outcome

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def shares(values: Sequence[float]) -> list[float]:
    """Each value's fraction of the total (all zeros when the total is zero)."""
    total = sum(values)
    return [v / total if total else 0.0 for v in values]


def max_over_mean(values: Sequence[float]) -> float:
    """Largest value divided by the mean value (1.0 = perfectly even; NaN when all zero)."""
    if not values or not sum(values):
        return math.nan
    return max(values) / (sum(values) / len(values))


@dataclass(frozen=True, slots=True)
class BackendDelta:
    """One backend's own accounting over a run (differences of /sim/stats counters)."""

    backend: str
    requests: int
    query_tokens: int
    hit_tokens: int
    busy_s: float
    errors: int
    prefill_tps: float = 0.0

    @property
    def prefill_tokens(self) -> int:
        """Uncached prompt tokens the backend had to prefill."""
        return self.query_tokens - self.hit_tokens


def backend_deltas(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[BackendDelta]:
    """Per-backend counter differences between two /sim/stats snapshots of the same fleet."""
    out: list[BackendDelta] = []
    for b, a in zip(before, after, strict=True):

        def d(key: str, b: Mapping[str, Any] = b, a: Mapping[str, Any] = a) -> Any:
            return a[key] - b[key]

        out.append(
            BackendDelta(
                str(a.get("backend_id", len(out))),
                int(d("requests_total")),
                int(d("prefix_cache_queries_tokens")),
                int(d("prefix_cache_hits_tokens")),
                float(d("prefill_busy_seconds")),
                int(d("errors_total")),
                float((a.get("config") or {}).get("prefill_tokens_per_s", 0.0)),
            )
        )
    return out


def speed_class_shares(deltas: Sequence[BackendDelta]) -> dict[str, float]:
    """Share of all prefill tokens carried by each prefill-speed class (key: tokens/s)."""
    by_class: dict[float, int] = {}
    for d in deltas:
        by_class[d.prefill_tps] = by_class.get(d.prefill_tps, 0) + d.prefill_tokens
    total = sum(by_class.values())
    return {f"{tps:g}": (n / total if total else math.nan) for tps, n in sorted(by_class.items())}


def fastest_share(class_shares: Mapping[str, float]) -> float:
    """The fastest class's share of prefill tokens; NaN for a homogeneous fleet."""
    if len(class_shares) < 2:
        return math.nan
    return class_shares[max(class_shares, key=float)]


def inter_token_gaps(outcomes: Sequence[Outcome]) -> list[float]:
    """Every gap between consecutive content chunks of the successful requests."""
    return [g for o in outcomes if o.ok and o.gaps for g in o.gaps]


def per_request_mean_gaps(outcomes: Sequence[Outcome]) -> list[float]:
    """Each successful request's mean inter-token gap (requests with >= 2 content chunks)."""
    return [m for o in outcomes if o.ok and (m := o.mean_gap) is not None]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Every figure of one (workload, policy, repeat) run."""

    requests: int
    ok: int
    errors: int
    censored: int
    error_examples: tuple[str, ...]
    hit_rate: float
    ttft_wall: dict[str, float]
    ttft_sim: dict[str, float]
    e2e_sim: dict[str, float]
    duration_wall_s: float
    throughput_rps_wall: float
    throughput_rps_sim: float
    request_share: dict[str, float]
    prefill_share: dict[str, float]
    request_max_over_mean: float
    prefill_max_over_mean: float
    prefill_utilisation: dict[str, float]
    utilisation_mean: float
    utilisation_max: float
    header_share: dict[str, float]
    send_lag_p99_s: float
    backend_errors: int
    usage_hit_rate: float
    itl_sim: dict[str, float]
    tpot_sim: dict[str, float]
    speed_class_share: dict[str, float]
    fast_share: float
    fast_share_warm: float
    gateway_share: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return asdict(self)


def _pcts(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    return {f"p{q}": percentile(values, q) / scale for q in PERCENTILES}


def summarize(
    outcomes: Sequence[Outcome],
    deltas: Sequence[BackendDelta],
    time_scale: float,
    warm_deltas: Sequence[BackendDelta] = (),
) -> RunSummary:
    """Figures of a run: client latencies plus hit rate, shares and utilisation from backends.

    `warm_deltas` are the backends' counters from the end of the warm-up to the end of the run:
    the speed classes' shares of prefill once the gateway had time to learn the speeds.
    """
    ok = [o for o in outcomes if o.ok]
    ttft = [t for o in outcomes if (t := o.ttft_or_censored) is not None]
    e2e = [o.e2e for o in ok if o.e2e is not None]
    ends = [o.scheduled + o.e2e for o in ok if o.e2e is not None]
    duration = max(ends, default=0.0)
    scale = time_scale if time_scale > 0 else 1.0
    names = [d.backend for d in deltas]
    busy = [d.busy_s / duration if duration else math.nan for d in deltas]
    queries = sum(d.query_tokens for d in deltas)
    headers = Counter(o.backend or "?" for o in ok)
    errors = [o.error for o in outcomes if o.error]
    classes = speed_class_shares(deltas)
    gateways = Counter(o.gateway for o in outcomes if not math.isnan(o.scheduled))
    sent = sum(gateways.values())
    return RunSummary(
        requests=len(outcomes),
        ok=len(ok),
        errors=len(outcomes) - len(ok),
        censored=sum(1 for o in outcomes if o.ttft is None and o.waited is not None),
        error_examples=tuple(sorted(set(errors)))[:5],
        hit_rate=sum(d.hit_tokens for d in deltas) / queries if queries else math.nan,
        ttft_wall=_pcts(ttft),
        ttft_sim=_pcts(ttft, scale),
        e2e_sim=_pcts(e2e, scale),
        duration_wall_s=duration,
        throughput_rps_wall=len(ok) / duration if duration else math.nan,
        throughput_rps_sim=len(ok) / (duration / scale) if duration else math.nan,
        request_share=dict(zip(names, shares([d.requests for d in deltas]), strict=True)),
        prefill_share=dict(zip(names, shares([d.prefill_tokens for d in deltas]), strict=True)),
        request_max_over_mean=max_over_mean([d.requests for d in deltas]),
        prefill_max_over_mean=max_over_mean([d.prefill_tokens for d in deltas]),
        prefill_utilisation=dict(zip(names, busy, strict=True)),
        utilisation_mean=sum(busy) / len(busy) if busy else math.nan,
        utilisation_max=max(busy, default=math.nan),
        header_share={k: v / len(ok) for k, v in sorted(headers.items())},
        send_lag_p99_s=percentile([o.lag for o in outcomes if not math.isnan(o.scheduled)], 99),
        backend_errors=sum(d.errors for d in deltas),
        usage_hit_rate=_usage_hit_rate(ok),
        itl_sim=_pcts(inter_token_gaps(outcomes), scale),
        tpot_sim=_pcts(per_request_mean_gaps(outcomes), scale),
        speed_class_share=classes,
        fast_share=fastest_share(classes),
        fast_share_warm=fastest_share(speed_class_shares(warm_deltas)),
        gateway_share={str(g): n / sent for g, n in sorted(gateways.items())},
    )


def _usage_hit_rate(outcomes: Sequence[Outcome]) -> float:
    """Cached share of prompt tokens as the responses' `usage` reported it (a cross-check)."""
    pairs = [(o.cached_tokens, o.prompt_tokens) for o in outcomes if o.prompt_tokens]
    prompt = sum(p for _, p in pairs if p)
    return sum(c or 0 for c, _ in pairs) / prompt if prompt else math.nan


@dataclass(frozen=True, slots=True)
class Spread:
    """Mean and range of one figure over repeats."""

    mean: float
    low: float
    high: float

    @property
    def half_range(self) -> float:
        """Half the max-min range (the spread shown as ±)."""
        return (self.high - self.low) / 2


def spread(values: Sequence[float]) -> Spread:
    """Mean, min and max of the finite values (NaN when none)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return Spread(math.nan, math.nan, math.nan)
    return Spread(sum(finite) / len(finite), min(finite), max(finite))


FIGURES: dict[str, tuple[str, ...]] = {
    "hit_rate": ("hit_rate",),
    "ttft_p50": ("ttft_sim", "p50"),
    "ttft_p90": ("ttft_sim", "p90"),
    "ttft_p99": ("ttft_sim", "p99"),
    "e2e_p50": ("e2e_sim", "p50"),
    "e2e_p99": ("e2e_sim", "p99"),
    "itl_p50": ("itl_sim", "p50"),
    "itl_p99": ("itl_sim", "p99"),
    "fast_share": ("fast_share",),
    "fast_share_warm": ("fast_share_warm",),
    "throughput": ("throughput_rps_sim",),
    "req_max_mean": ("request_max_over_mean",),
    "prefill_max_mean": ("prefill_max_over_mean",),
    "util_mean": ("utilisation_mean",),
    "util_max": ("utilisation_max",),
    "errors": ("errors",),
}


def figure(summary: Mapping[str, Any], name: str) -> float:
    """One named figure (see FIGURES) out of a RunSummary dict."""
    value: Any = summary
    for key in FIGURES[name]:
        if not isinstance(value, Mapping) or key not in value:
            return math.nan  # a summary written before the figure existed
        value = value[key]
    return math.nan if value is None else float(value)  # JSON writes NaN as null


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Spread]:
    """Every named figure over the repeats of one policy."""
    return {name: spread([figure(r, name) for r in runs]) for name in FIGURES}
