"""Fleet settings per workload: cache = a quarter of its distinct blocks, speed for ~65% busy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.harness import FleetSettings
from bench.offline import HitCount, PromptBlocks, distinct_blocks, prompt_blocks, round_robin
from bench.offline import upper_bound as infinite_cache
from bench.tokens import SimTokenizer
from bench.workloads import Workload


@dataclass(frozen=True, slots=True)
class PlanParams:
    """Knobs shared by every workload of an invocation."""

    backends: int = 8
    block_size: int = 16
    decode_ms: float = 20.0
    target_util: float = 0.65
    cache_fraction: float = 0.25
    wall_target_s: float = 14.0
    max_wall_rate: float = 55.0
    time_scale: float | None = None
    bytes_per_token: float | None = None
    scheduler: str | None = None
    max_batched_tokens: int | None = None
    decode_batch_slowdown: float | None = None
    speeds: tuple[float, ...] = ()
    min_model_len: int = 32768

    @property
    def tokenizer(self) -> SimTokenizer:
        """The simulator's tokenizer at the configured ratio."""
        return SimTokenizer(self.bytes_per_token)


@dataclass(frozen=True, slots=True)
class WorkloadPlan:
    """A timed workload, the fleet it runs on, and the offline figures behind the choice."""

    workload: Workload
    fleet: FleetSettings
    distinct_blocks: int
    upper_bound: HitCount
    offline_round_robin: HitCount
    span_s: float
    hot_group_pinned_util: float | None
    bytes_per_token: float

    @property
    def offered_prefill_s(self) -> float:
        """Simulated seconds of prefill round-robin would cause (its uncached tokens / speed)."""
        return self.offline_round_robin.miss_tokens / self.fleet.prefill_tps

    @property
    def expected_rr_util(self) -> float:
        """Round-robin's expected mean prefill utilisation over the arrival span."""
        capacity = self.fleet.backends * self.span_s
        return self.offered_prefill_s / capacity if capacity else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (no request bodies)."""
        n = len(self.workload.requests)
        return {
            "requests": n,
            "description": self.workload.description,
            "fleet": self.fleet.to_dict(),
            "distinct_blocks": self.distinct_blocks,
            "cache_fraction_of_distinct": self.fleet.cache_blocks / self.distinct_blocks,
            "prompt_tokens": self.upper_bound.query_tokens,
            "bytes_per_token": self.bytes_per_token,
            "upper_bound_hit_rate": self.upper_bound.hit_rate,
            "offline_round_robin_hit_rate": self.offline_round_robin.hit_rate,
            "offered_prefill_s_under_round_robin": self.offered_prefill_s,
            "expected_round_robin_prefill_util": self.expected_rr_util,
            "hot_group_pinned_util": self.hot_group_pinned_util,
            "arrival_span_sim_s": self.span_s,
            "arrival_span_wall_s": self.span_s * self.fleet.time_scale,
            "mean_rate_sim_rps": n / self.span_s if self.span_s else None,
        }


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def plan_workload(workload: Workload, params: PlanParams) -> WorkloadPlan:
    """Choose cache size, prefill speed and time scale for one workload.

    The workload keeps its own arrival process (trace timestamps, Poisson rate, think times;
    session follow-ups also wait for a nominal answer of max_tokens x decode time). Cache per
    backend = `cache_fraction` of the distinct blocks; prefill speed = the uncached tokens of an
    offline round-robin replay / (backends x target utilisation x arrival span); time scale =
    wall target / arrival span, the wall target growing with the request count.
    """
    bs = params.block_size
    service_s = max(r.max_tokens for r in workload.requests) * params.decode_ms / 1000
    timed = workload.retimed(1.0, service_s)
    span = timed.span
    if span <= 0:
        raise ValueError(f"workload {workload.name} has no arrival span")
    ordered = sorted(timed.requests, key=lambda q: (q.at, q.rid))
    tokenizer = params.tokenizer
    blocks = [prompt_blocks(r, bs, tokenizer) for r in ordered]
    distinct = distinct_blocks(blocks)
    cache = max(1, round(distinct * params.cache_fraction))
    rr = round_robin(blocks, params.backends, cache, bs)
    tps = _sig(rr.miss_tokens / (params.backends * params.target_util * span), 3)
    if params.time_scale is not None:
        scale = params.time_scale
    else:
        wall = max(params.wall_target_s, len(ordered) / params.max_wall_rate)
        scale = _sig(wall / span)
    fleet = FleetSettings(
        backends=params.backends,
        block_size=bs,
        cache_blocks=cache,
        prefill_tps=tps,
        decode_ms=params.decode_ms,
        time_scale=scale,
        max_model_len=model_len(blocks, workload, params.min_model_len),
        bytes_per_token=params.bytes_per_token,
        scheduler=params.scheduler,
        max_batched_tokens=params.max_batched_tokens,
        decode_batch_slowdown=params.decode_batch_slowdown,
        speeds=params.speeds,
    )
    hot = _hot_group_util(ordered, blocks, bs, tps, span)
    upper = infinite_cache(blocks, bs)
    return WorkloadPlan(timed, fleet, distinct, upper, rr, span, hot, tokenizer.ratio)


def model_len(blocks: Sequence[PromptBlocks], workload: Workload, floor: int) -> int:
    """The fleet's max_model_len: `floor`, or the next power of two above the longest request."""
    need = max((b.n_tokens for b in blocks), default=0)
    need += max((r.max_tokens for r in workload.requests), default=0)
    size = floor
    while size < need:
        size *= 2
    return size


def _hot_group_util(
    ordered: list[Any], blocks: list[PromptBlocks], bs: int, tps: float, span: float
) -> float | None:
    """Prefill load of the most popular group if all of it went to one warm backend."""
    groups: dict[int, list[PromptBlocks]] = {}
    for r, b in zip(ordered, blocks, strict=True):
        if r.group >= 0:
            groups.setdefault(r.group, []).append(b)
    if not groups:
        return None
    hottest = max(groups.values(), key=len)
    return infinite_cache(hottest, bs).miss_tokens / tps / span
