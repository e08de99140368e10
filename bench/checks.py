"""The checks of the issue's targets that one benchmark invocation can compute (PASS/FAIL)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import Spread, aggregate

PROFILE = "profile"
THRESHOLD = "sglang_threshold"
ROUND_ROBIN = "round_robin"
LEAST_LOADED = "least_loaded"
AFFINITY_WORKLOADS = ("a", "b", "c", "c_long", "d")
FAST_SHARE_TARGET = 0.6
GATEWAYS_TOLERANCE = 0.10

Runs = Mapping[str, Sequence[Mapping[str, Any]]]


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


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What the fleet of the runs was: batch-dependent decode, speed classes, speeds told."""

    decode_batch_slowdown: float | None = None
    speed_classes: int = 1
    tell_speeds: str = "true"
    fast_capacity_share: float = math.nan


def _fmt(s: Spread) -> str:
    return f"{s.mean:.4g} (range {s.low:.4g}-{s.high:.4g})"


def _missing(workload: str, name: str, policies: Sequence[str]) -> Check:
    return Check(workload, name, False, f"not computed: policy {', '.join(policies)} not run")


def _errors_note(runs: Runs, names: Sequence[str]) -> str:
    bad = [n for n in names if any(r["errors"] for r in runs.get(n, ()))]
    return f" [WARNING: runs of {', '.join(bad)} had errors]" if bad else ""


def _le(a: Spread, b: Spread, factor: float = 1.0) -> bool:
    return not math.isnan(a.mean) and not math.isnan(b.mean) and a.mean <= factor * b.mean


def _lt(a: Spread, b: Spread) -> bool:
    return not math.isnan(a.mean) and not math.isnan(b.mean) and a.mean < b.mean


def _compare(
    workload: str,
    have: Mapping[str, Mapping[str, Spread]],
    figure: str,
    other: str,
    factor: float,
    note: str,
    strict: bool = False,
) -> Check:
    """profile's `figure` <= factor x (or < when strict) the other policy's."""
    label = figure.replace("_", " ").replace("ttft", "TTFT")
    relation = "<" if strict else "<="
    times = f"{factor:g}x " if factor != 1.0 else ""
    name = f"profile {label} {relation} {times}{other}'s"
    if PROFILE not in have or other not in have:
        return _missing(workload, name, [p for p in (PROFILE, other) if p not in have])
    a, b = have[PROFILE][figure], have[other][figure]
    ok = _lt(a, b) if strict else _le(a, b, factor)
    detail = f"{_fmt(a)} vs {times}{_fmt(b)} simulated s{note}"
    return Check(workload, name, ok, detail)


def _share_check(workload: str, have: Mapping[str, Mapping[str, Spread]], note: str) -> Check:
    name = "profile: no backend above 1.5x the mean share of requests"
    if PROFILE not in have:
        return _missing(workload, name, [PROFILE])
    worst = have[PROFILE]["req_max_mean"]
    ok = not math.isnan(worst.high) and worst.high <= 1.5
    return Check(workload, name, ok, f"max/mean {_fmt(worst)}{note}")


def workload_checks(
    workload: str, upper_bound: float, runs: Runs, context: CheckContext | None = None
) -> list[Check]:
    """The checks that apply to one workload, from its runs grouped by policy."""
    ctx = context or CheckContext()
    out: list[Check] = []
    have = {name: aggregate(r) for name, r in runs.items() if r}
    prof = have.get(PROFILE)
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
            out.append(_compare(workload, have, f"ttft_{q}", THRESHOLD, 1.0, note))
    if workload == "d":
        out.append(_share_check(workload, have, note))
    if workload == "e":
        slow = ctx.decode_batch_slowdown
        batch = f" [decode batch slowdown {slow:g}]" if slow else " [decode NOT batch-dependent]"
        out.append(_compare(workload, have, "ttft_p99", THRESHOLD, 0.5, note + batch))
        out.append(_compare(workload, have, "ttft_p50", THRESHOLD, 1.5, note + batch))
        out.append(_compare(workload, have, "e2e_p99", THRESHOLD, 1.0, note + batch))
        out.append(_share_check(workload, have, note + batch))
    if ctx.speed_classes > 1:
        out.extend(heterogeneous_checks(workload, have, runs, ctx))
    return out


def heterogeneous_checks(
    workload: str, have: Mapping[str, Mapping[str, Spread]], runs: Runs, ctx: CheckContext
) -> list[Check]:
    """Fast backends' share of prefill tokens, and TTFT p50 against speed-blind baselines."""
    told = f" [speeds told: {ctx.tell_speeds}]"
    note = _errors_note(runs, (PROFILE, ROUND_ROBIN, LEAST_LOADED)) + told
    name = f"profile: fastest class carries >= {FAST_SHARE_TARGET:.0%} of prefill tokens"
    out: list[Check] = []
    if PROFILE not in have:
        out.append(_missing(workload, name, [PROFILE]))
    else:
        # After warm-up where the run measured it: the gateway starts told equal speeds.
        share = have[PROFILE]["fast_share_warm"]
        if math.isnan(share.mean):
            share = have[PROFILE]["fast_share"]
        ok = not math.isnan(share.mean) and share.mean >= FAST_SHARE_TARGET
        capacity = f"its share of capacity {ctx.fast_capacity_share:.3f}"
        out.append(Check(workload, name, ok, f"{_fmt(share)} ({capacity}){note}"))
    for other in (ROUND_ROBIN, LEAST_LOADED):
        out.append(_compare(workload, have, "ttft_p50", other, 1.0, note, strict=True))
    return out


def gateways_check(one: Sequence[Mapping[str, Any]], two: Sequence[Mapping[str, Any]]) -> Check:
    """(a) with two gateways sharing Redis: profile's TTFT p99 within 10% of one gateway's."""
    name = f"2 gateways: profile TTFT p99 within {GATEWAYS_TOLERANCE:.0%} of one gateway's"
    if not one or not two:
        missing = [label for label, runs in (("1 gateway", one), ("2 gateways", two)) if not runs]
        return Check("a", name, False, f"not computed: no {' or '.join(missing)} run")
    a, b = aggregate(two)["ttft_p99"], aggregate(one)["ttft_p99"]
    ok = _le(a, b, 1.0 + GATEWAYS_TOLERANCE)
    ratio = a.mean / b.mean if b.mean else math.nan
    detail = f"{_fmt(a)} vs {_fmt(b)} simulated s ({ratio:.2f}x){_errors_note({'2': two}, ['2'])}"
    return Check("a", name, ok, detail)
