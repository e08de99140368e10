"""The checks of issue 3's "What it must show" that one benchmark invocation can compute."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import Spread, aggregate

PROFILE = "profile"
THRESHOLD = "sglang_threshold"
AFFINITY_WORKLOADS = ("a", "b", "c", "d")


@dataclass(frozen=True, slots=True)
class Check:
    """One PASS/FAIL line."""

    workload: str
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        """The printed form."""
        return f"{'PASS' if self.passed else 'FAIL'} ({self.workload}) {self.name}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"workload": self.workload, "check": self.name, "passed": self.passed,
                "detail": self.detail}  # fmt: skip


def _fmt(s: Spread) -> str:
    return f"{s.mean:.4g} (range {s.low:.4g}-{s.high:.4g})"


def _missing(workload: str, name: str, policies: Sequence[str]) -> Check:
    return Check(workload, name, False, f"not computed: policy {', '.join(policies)} not run")


def _errors_note(runs: Mapping[str, Sequence[Mapping[str, Any]]], names: Sequence[str]) -> str:
    bad = [n for n in names if any(r["errors"] for r in runs.get(n, ()))]
    return f" [WARNING: runs of {', '.join(bad)} had errors]" if bad else ""


def _le(a: Spread, b: Spread, factor: float = 1.0) -> bool:
    return not math.isnan(a.mean) and not math.isnan(b.mean) and a.mean <= factor * b.mean


def workload_checks(
    workload: str, upper_bound: float, runs: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[Check]:
    """The checks that apply to one workload, from its runs grouped by policy."""
    out: list[Check] = []
    have = {name: aggregate(r) for name, r in runs.items() if r}
    prof = have.get(PROFILE)
    sgl = have.get(THRESHOLD)
    note = _errors_note(runs, (PROFILE, THRESHOLD))
    if workload in AFFINITY_WORKLOADS:
        name = "profile hit rate >= 95% of the offline upper bound"
        if prof is None:
            out.append(_missing(workload, name, [PROFILE]))
        else:
            hit = prof["hit_rate"]
            ok = not math.isnan(hit.mean) and hit.mean >= 0.95 * upper_bound
            ratio = hit.mean / upper_bound if upper_bound else math.nan
            detail = f"{_fmt(hit)} vs bound {upper_bound:.4g} ({ratio:.1%} of it){note}"
            out.append(Check(workload, name, ok, detail))
        for q in ("p50", "p99"):
            name = f"profile TTFT {q} <= sglang_threshold's"
            if prof is None or sgl is None:
                out.append(_missing(workload, name, [p for p in (PROFILE, THRESHOLD)
                                                     if p not in have]))  # fmt: skip
                continue
            a, b = prof[f"ttft_{q}"], sgl[f"ttft_{q}"]
            detail = f"{_fmt(a)} vs {_fmt(b)} simulated s{note}"
            out.append(Check(workload, name, _le(a, b), detail))
    if workload == "d":
        name = "profile: no backend above 1.5x the mean share of requests"
        if prof is None:
            out.append(_missing(workload, name, [PROFILE]))
        else:
            worst = prof["req_max_mean"]
            ok = not math.isnan(worst.high) and worst.high <= 1.5
            out.append(Check(workload, name, ok, f"max/mean {_fmt(worst)}{note}"))
    if workload == "e":
        for q, factor in (("p99", 0.5), ("p50", 1.5)):
            name = f"profile TTFT {q} <= {factor}x sglang_threshold's"
            if prof is None or sgl is None:
                out.append(_missing(workload, name, [p for p in (PROFILE, THRESHOLD)
                                                     if p not in have]))  # fmt: skip
                continue
            a, b = prof[f"ttft_{q}"], sgl[f"ttft_{q}"]
            detail = f"{_fmt(a)} vs {factor} x {_fmt(b)} simulated s{note}"
            out.append(Check(workload, name, _le(a, b, factor), detail))
    return out
