"""Plain-text output: fleet settings, a line per run, a table per workload (a row per policy)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from bench.plan import WorkloadPlan
from bench.report import Spread, aggregate

LAG_WARN_S = 0.05  # wall seconds of client send lag (p99) above which a run is flagged

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (header, figure, format) -- "%" shows a fraction as percent
    ("hit %", "hit_rate", "%"),
    ("TTFT p50 s", "ttft_p50", ".3f"),
    ("TTFT p90 s", "ttft_p90", ".3f"),
    ("TTFT p99 s", "ttft_p99", ".3f"),
    ("e2e p50 s", "e2e_p50", ".3f"),
    ("e2e p99 s", "e2e_p99", ".3f"),
    ("ITL p50 ms", "itl_p50", "ms"),
    ("ITL p99 ms", "itl_p99", "ms"),
    ("req/s", "throughput", ".1f"),
    ("req max/mean", "req_max_mean", ".2f"),
    ("prefill max/mean", "prefill_max_mean", ".2f"),
    ("util mean", "util_mean", "%"),
    ("util max", "util_max", "%"),
    ("errors", "errors", ".0f"),
)
_FAST_COLUMNS = (("fast share", "fast_share", "%"), ("after warm-up", "fast_share_warm", "%"))


def cell(s: Spread, fmt: str) -> str:
    """`mean±half-range` of a figure (just the mean when the repeats agree or there is one)."""
    if math.isnan(s.mean):
        return "n/a"
    scale, spec = {"%": (100.0, ".1f"), "ms": (1000.0, ".1f")}.get(fmt, (1.0, fmt))
    text = format(s.mean * scale, spec)
    if s.high > s.low:
        text += "±" + format(s.half_range * scale, spec)
    return text


def policy_table(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Rows of policies (repeats averaged, ± half their range); TTFT in simulated seconds.

    A heterogeneous fleet adds the fastest speed class's share of prefill tokens.
    """
    hetero = any(not math.isnan(r.get("fast_share", math.nan)) for v in runs.values() for r in v)
    columns = (*_COLUMNS, *_FAST_COLUMNS) if hetero else _COLUMNS
    header = ["policy", "runs", *(c[0] for c in columns)]
    rows = [header]
    for policy, policy_runs in runs.items():
        if not policy_runs:
            rows.append([policy, "0", *("-" for _ in columns)])
            continue
        agg = aggregate(policy_runs)
        rows.append(
            [policy, str(len(policy_runs)), *(cell(agg[fig], fmt) for _, fig, fmt in columns)]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        first = row[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        lines.append("  ".join([first, *rest]))
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def run_line(record: Mapping[str, Any]) -> str:
    """One line about a finished run."""
    head = f"  {record['policy']:<17} #{record['repeat'] + 1}"
    if "summary" not in record:
        return f"{head}: FAILED TO START: {record.get('failed', '?').splitlines()[0]}"
    s = record["summary"]
    text = (
        f"{head}: hit {s['hit_rate']:.1%}  TTFT p50 {s['ttft_sim']['p50']:.3f} "
        f"p99 {s['ttft_sim']['p99']:.3f} s(sim)  req max/mean {s['request_max_over_mean']:.2f}  "
        f"util {s['utilisation_mean']:.0%}  {record['wall_s']:.0f} s wall"
    )
    agreement = record.get("token_agreement", 1.0)
    if abs(agreement - 1.0) > 0.01:
        text += f"  !! backends saw {agreement:.3f}x the offline prompt tokens"
    if not math.isnan(s.get("fast_share", math.nan)):
        text += f"  fast share {s['fast_share']:.1%}"
        if not math.isnan(s.get("fast_share_warm", math.nan)):
            text += f" ({s['fast_share_warm']:.1%} after warm-up)"
    cpus = os.cpu_count() or 1
    if s["send_lag_p99_s"] > LAG_WARN_S:
        text += (
            f"  !! client send lag p99 {s['send_lag_p99_s']:.2f} s wall: the CPU was short, "
            "latencies are inflated"
        )
    if record["host_load_1min"] > cpus:
        text += f"  (host load {record['host_load_1min']:.1f} on {cpus} CPUs)"
    if s["errors"]:
        text += f"  !!! {s['errors']} ERRORS: {s['error_examples'][:2]}"
        if s["censored"]:
            text += f" ({s['censored']} cut off before their first token: TTFT = time waited)"
    return text


def plan_lines(plan: WorkloadPlan) -> list[str]:
    """What a workload is and which fleet settings were derived for it."""
    d = plan.to_dict()
    f = plan.fleet
    lines = [
        f"  {d['description']}",
        f"  {d['requests']} requests, {d['prompt_tokens']:,} prompt tokens, "
        f"{plan.distinct_blocks:,} distinct {f.block_size}-token blocks",
        f"  fleet: {f.backends} backends, cache {f.cache_blocks:,} blocks each "
        f"({d['cache_fraction_of_distinct']:.0%} of distinct), prefill {f.prefill_tps:,.0f} tok/s, "
        f"decode {f.decode_ms:g} ms/token, time scale {f.time_scale:g} (wall = sim x scale)",
        f"  simulator: bytes/token {_opt(f.bytes_per_token, 'default')}, scheduler "
        f"{_opt(f.scheduler, 'default')}, max batched tokens "
        f"{_opt(f.max_batched_tokens, 'default')}, decode batch slowdown "
        f"{_opt(f.decode_batch_slowdown, 'default')}, max_model_len "
        f"{f.max_model_len}, prefill tok/s per backend {_speeds(f.backend_tps())}",
        f"  arrivals over {plan.span_s:.1f} s sim ({plan.span_s * f.time_scale:.1f} s wall), "
        f"{d['mean_rate_sim_rps']:.1f} req/s sim; offline round-robin hit "
        f"{plan.offline_round_robin.hit_rate:.1%} -> expected prefill busy "
        f"{plan.expected_rr_util:.0%}; upper bound (one infinite cache) "
        f"{plan.upper_bound.hit_rate:.1%}",
    ]
    if plan.workload.name == "e" and plan.hot_group_pinned_util is not None:
        lines.append(
            f"  hottest group pinned to one backend would need {plan.hot_group_pinned_util:.0%} "
            "of its prefill capacity"
        )
    return lines


def _opt(value: object, default: str) -> str:
    return default if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _speeds(values: Sequence[float]) -> str:
    distinct = sorted(set(values))
    if len(distinct) == 1:
        return f"{distinct[0]:,.0f} (all)"
    return ",".join(f"{v:,.0f}" for v in values)
