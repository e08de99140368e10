"""Unit tests of the benchmark's report math: percentiles, shares, upper bound, checks."""

from __future__ import annotations

import math

import pytest

from bench.checks import workload_checks
from bench.offline import PromptBlocks, cached_blocks, distinct_blocks, round_robin, upper_bound
from bench.replay import Outcome
from bench.report import (
    BackendDelta,
    aggregate,
    backend_deltas,
    max_over_mean,
    percentile,
    shares,
    spread,
    summarize,
)
from bench.tables import cell, policy_table


def test_percentile_linear_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert percentile([1.0, 2.0], 90) == pytest.approx(1.9)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="q must"):
        percentile([1.0], 101)


def test_shares_and_max_over_mean() -> None:
    assert shares([1, 1, 2]) == [0.25, 0.25, 0.5]
    assert shares([0, 0]) == [0.0, 0.0]
    assert max_over_mean([1, 1, 1, 1]) == 1.0
    assert max_over_mean([4, 0, 0, 0]) == 4.0
    assert max_over_mean([3, 1]) == 1.5
    assert math.isnan(max_over_mean([0, 0]))


def _p(n_tokens: int, hashes: list[int]) -> PromptBlocks:
    return PromptBlocks(n_tokens, tuple(hashes))


def test_upper_bound_infinite_cache_in_order() -> None:
    bs = 4
    prompts = [_p(13, [1, 2, 3]), _p(13, [1, 2, 3]), _p(9, [1, 7]), _p(8, [5, 6])]
    hits = upper_bound(prompts, bs)
    # 2nd prompt: 3 blocks match but the last token's block must be computed -> (13-1)//4 = 3;
    # 3rd: block 1 matches; 4th: nothing.
    assert hits.query_tokens == 43
    assert hits.hit_tokens == 3 * bs + 1 * bs
    assert hits.hit_rate == pytest.approx(16 / 43)
    assert cached_blocks(3, 12, 4) == 2
    assert distinct_blocks(prompts) == 6


def test_round_robin_offline_matches_upper_bound_with_one_huge_cache() -> None:
    prompts = [_p(13, [1, 2, 3]), _p(13, [1, 2, 3]), _p(9, [1, 7])]
    assert round_robin(prompts, 1, 10**6, 4) == upper_bound(prompts, 4)
    split = round_robin(prompts, 2, 10**6, 4)
    assert split.hit_tokens == 4  # prompt 3 lands on backend 0 with prompt 1: one block


def test_round_robin_offline_evicts_lru() -> None:
    prompts = [_p(9, [1, 2]), _p(9, [3, 4]), _p(9, [1, 2])]
    assert round_robin(prompts, 1, 2, 4).hit_tokens == 0
    assert round_robin(prompts, 1, 4, 4).hit_tokens == 8


def _stats(backend: str, req: int, q: int, h: int, busy: float) -> dict[str, object]:
    return {
        "backend_id": backend,
        "requests_total": req,
        "prefix_cache_queries_tokens": q,
        "prefix_cache_hits_tokens": h,
        "prefill_busy_seconds": busy,
        "errors_total": 0,
    }


def test_backend_deltas_and_summary() -> None:
    before = [_stats("b0", 5, 100, 50, 1.0), _stats("b1", 0, 0, 0, 0.0)]
    after = [_stats("b0", 8, 400, 250, 3.0), _stats("b1", 1, 100, 0, 1.0)]
    deltas = backend_deltas(before, after)
    assert deltas == [
        BackendDelta("b0", 3, 300, 200, 2.0, 0),
        BackendDelta("b1", 1, 100, 0, 1.0, 0),
    ]
    outcomes = [
        Outcome(0, 0.0, ttft=0.2, e2e=1.0, backend="b0", prompt_tokens=100, cached_tokens=50),
        Outcome(1, 1.0, ttft=0.4, e2e=3.0, backend="b0"),
        Outcome(2, 1.0, ttft=0.6, e2e=2.0, backend="b0"),
        Outcome(3, 2.0, ttft=None, waited=5.0, error="deadline: cancelled"),
    ]
    s = summarize(outcomes, deltas, time_scale=0.5)
    assert s.requests == 4
    assert s.ok == 3
    assert s.errors == 1
    assert s.censored == 1
    assert s.hit_rate == pytest.approx(200 / 400)
    assert s.duration_wall_s == pytest.approx(4.0)
    assert s.ttft_wall["p50"] == pytest.approx(0.5)  # censored 5.0 counts as a slow TTFT
    assert s.ttft_sim["p50"] == pytest.approx(1.0)
    assert s.throughput_rps_wall == pytest.approx(3 / 4.0)
    assert s.throughput_rps_sim == pytest.approx(3 / 8.0)
    assert s.request_share == {"b0": 0.75, "b1": 0.25}
    assert s.prefill_share == {"b0": 0.5, "b1": 0.5}
    assert s.request_max_over_mean == pytest.approx(1.5)
    assert s.prefill_utilisation == {"b0": 0.5, "b1": 0.25}
    assert s.header_share == {"b0": 1.0}
    assert s.usage_hit_rate == pytest.approx(0.5)


def _run(hit: float, p50: float, p99: float, req_max: float = 1.0) -> dict[str, object]:
    return {
        "hit_rate": hit,
        "ttft_sim": {"p50": p50, "p90": p99, "p99": p99},
        "throughput_rps_sim": 10.0,
        "request_max_over_mean": req_max,
        "prefill_max_over_mean": 1.0,
        "utilisation_mean": 0.6,
        "utilisation_max": 0.7,
        "errors": 0,
    }


def test_spread_and_aggregate() -> None:
    s = spread([1.0, 3.0, math.nan])
    assert (s.mean, s.low, s.high, s.half_range) == (2.0, 1.0, 3.0, 1.0)
    agg = aggregate([_run(0.5, 0.1, 1.0), _run(0.7, 0.3, 2.0)])
    assert agg["hit_rate"].mean == pytest.approx(0.6)
    assert agg["ttft_p99"].high == 2.0
    assert cell(agg["hit_rate"], "%") == "60.0±10.0"
    assert cell(spread([0.25]), ".2f") == "0.25"
    assert "profile" in policy_table({"profile": [_run(0.5, 0.1, 1.0)], "least_loaded": []})


def test_checks_pass_fail_and_missing_policy() -> None:
    runs = {
        "profile": [_run(0.86, 0.10, 0.5, 1.2), _run(0.84, 0.12, 0.6, 1.4)],
        "sglang_threshold": [_run(0.88, 0.11, 1.0, 3.0), _run(0.88, 0.11, 1.1, 3.0)],
    }
    by_name = {c.name: c.passed for c in workload_checks("d", 0.88, runs)}
    assert by_name == {
        "profile hit rate >= 95% of the offline upper bound": True,
        "profile TTFT p50 <= sglang_threshold's": True,
        "profile TTFT p99 <= sglang_threshold's": True,
        "profile: no backend above 1.5x the mean share of requests": True,
    }
    e = {c.name: c.passed for c in workload_checks("e", 0.6, runs)}
    assert e == {
        "profile TTFT p99 <= 0.5x sglang_threshold's": False,  # 0.55 > 0.5 * 1.05
        "profile TTFT p50 <= 1.5x sglang_threshold's": True,
        "profile e2e p99 <= sglang_threshold's": False,  # no e2e figures in these runs: NaN
        "profile: no backend above 1.5x the mean share of requests": True,
    }
    missing = workload_checks("a", 0.9, {"round_robin": [_run(0.3, 0.2, 0.4)]})
    assert len(missing) == 3
    assert all(not c.passed and "not run" in c.detail for c in missing)
    assert missing[0].line().startswith("FAIL (a)")
