"""Tables and merged checks of the calibration matrix (one table per configuration)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.checks import Check, gateways_check
from bench.report import aggregate
from bench.tables import LAG_WARN_S, cell

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("hit %", "hit_rate", "%"),
    ("TTFT p50", "ttft_p50", ".3f"),
    ("TTFT p90", "ttft_p90", ".3f"),
    ("TTFT p99", "ttft_p99", ".3f"),
    ("e2e p50", "e2e_p50", ".3f"),
    ("e2e p99", "e2e_p99", ".3f"),
    ("ITL p50 ms", "itl_p50", "ms"),
    ("ITL p99 ms", "itl_p99", "ms"),
    ("req max/mean", "req_max_mean", ".2f"),
    ("fast share", "fast_share", "%"),
    ("errors", "errors", ".0f"),
)


def runs_by_policy(section: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A workload section's run summaries grouped by policy (failed runs left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for run in section.get("runs", []):
        if "summary" in run:
            out.setdefault(run["policy"], []).append(run["summary"])
    return out


def config_table(result: Mapping[str, Any]) -> str:
    """One row per (workload, policy) of a routing_quality result; TTFT etc. simulated s."""
    header = ["workload", "bound %", "policy", "runs", *(c[0] for c in _COLUMNS)]
    rows = [header]
    for name, section in result.get("workloads", {}).items():
        bound = section.get("plan", {}).get("upper_bound_hit_rate", math.nan)
        for policy, runs in runs_by_policy(section).items():
            agg = aggregate(runs)
            cells = [cell(agg[fig], fmt) for _, fig, fmt in _COLUMNS]
            rows.append([name, f"{bound * 100:.1f}", policy, str(len(runs)), *cells])
        if "error" in section:
            rows.append([name, "-", "(not built)", "0", *("-" for _ in _COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in pairs))
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def result_checks(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checks a routing_quality result stored."""
    return list(result.get("checks", []))


def lag_flags(result: Mapping[str, Any], limit_s: float) -> list[str]:
    """`workload/policy#repeat` of every run whose client send lag p99 exceeded the limit."""
    out: list[str] = []
    for name, section in result.get("workloads", {}).items():
        for run in section.get("runs", []):
            lag = run.get("summary", {}).get("send_lag_p99_s", 0.0)
            if lag > limit_s:
                out.append(f"{name}/{run['policy']}#{run['repeat'] + 1} ({lag:.2f} s)")
    return out


def two_gateway_check(one: Mapping[str, Any] | None, two: Mapping[str, Any] | None) -> Check:
    """The 10% TTFT p99 check from the one- and two-gateway results of workload (a)."""

    def profile_runs(result: Mapping[str, Any] | None) -> Sequence[Mapping[str, Any]]:
        if not result:
            return []
        section = result.get("workloads", {}).get("a", {})
        return runs_by_policy(section).get("profile", [])

    return gateways_check(profile_runs(one), profile_runs(two))


def _by_design(check: Mapping[str, Any], policies: Sequence[str]) -> bool:
    """True for a check left uncomputed because its part does not run that policy on purpose."""
    detail = str(check.get("detail", ""))
    prefix = "not computed: policy "
    if not detail.startswith(prefix):
        return False
    missing = detail[len(prefix) :].removesuffix(" not run").split(", ")
    return any(m not in policies for m in missing)


def matrix_checks(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every part's checks (less those its policy list leaves out by design), plus the
    two-gateway comparison."""
    checks = [
        {**c, "part": name}
        for name, r in results.items()
        for c in result_checks(r)
        if not _by_design(c, r.get("policies", []))
    ]
    if "gateways-1" in results or "gateways-2" in results:
        g = two_gateway_check(results.get("gateways-1"), results.get("gateways-2"))
        checks.append({**g.to_dict(), "part": "gateways-1 vs gateways-2"})
    return checks


def print_matrix(
    results: Mapping[str, Mapping[str, Any]],
    checks: Sequence[Mapping[str, Any]],
    wall_s: float,
    skipped: Sequence[str],
) -> None:
    """One table per part, then every check and the totals."""
    print("\n================ calibration matrix ================")
    for name, result in results.items():
        print(f"\n== {name} ({result.get('wall_s', 0):.0f} s, exit {result.get('exit_status')}) ==")
        print(config_table(result))
        lagged = lag_flags(result, LAG_WARN_S)
        if lagged:
            print(f"!! client send lag above {LAG_WARN_S:g} s (not figures, rerun): {lagged}")
    print("\n== checks ==")
    for c in checks:
        print(f"{'PASS' if c['passed'] else 'FAIL'} [{c.get('part', '')}] ({c['workload']}) "
              f"{c['check']}: {c['detail']}")  # fmt: skip
    passed = sum(1 for c in checks if c["passed"])
    print(f"\n{passed}/{len(checks)} checks passed; matrix wall time {wall_s / 60:.1f} min")
    if skipped:
        print(f"!! not run (interrupted or past --max-minutes): {', '.join(skipped)}")
