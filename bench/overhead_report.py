"""Overhead benchmark figures: ratios against direct, CPU per 1,000 requests, checks, table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.overhead_wrk import WrkResult

DIRECT = "direct"
PERCENTILES = ("p50", "p90", "p99")
DISTURBED_CORES = 0.25  # other processes busier than this during a run: figures disturbed


@dataclass(frozen=True)
class Scenario:
    """One kind of load: closed or open loop, streamed or not."""

    name: str
    stream: bool
    max_tokens: int
    open_loop: bool
    system_bytes: int = 0


@dataclass
class Run:
    """One (scenario, target) measurement, or why it is missing."""

    scenario: Scenario
    target: str
    result: WrkResult | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    other_cpu_s: float | None = None  # CPU of processes that are not the benchmark's
    machine_cpu_s: dict[str, Any] = field(default_factory=dict)  # overhead_cpu.split()
    redis_commands: int | None = None  # INFO commandstats calls, also those inside scripts
    redis_scripts: int | None = None  # EVAL/EVALSHA/FCALL calls: round trips of the index
    failure: str | None = None

    @property
    def clean(self) -> bool:
        """Measured, with no non-2xx response and no socket error."""
        return self.result is not None and self.failure is None and self.result.error_total == 0

    @property
    def other_cores(self) -> float | None:
        """Cores that processes outside the benchmark kept busy on average during the run."""
        if self.other_cpu_s is None or self.result is None or self.result.duration_s <= 0:
            return None
        return max(self.other_cpu_s, 0.0) / self.result.duration_s

    @property
    def disturbed(self) -> bool:
        """Other processes used a noticeable share of the machine during the run."""
        cores = self.other_cores
        return cores is not None and cores > DISTURBED_CORES

    def cpu_per_1k(self) -> dict[str, float]:
        """CPU seconds per 1,000 completed requests, for each process role measured."""
        if self.result is None or self.result.requests == 0:
            return {}
        n = self.result.requests
        return {role: round(s * 1000 / n, 4) for role, s in self.cpu_s.items()}


@dataclass(frozen=True)
class Check:
    """One target of issue 4: a figure of one (scenario, target) against a bound."""

    scenario: str
    target: str
    figure: str  # "ratio" or "added_p50_ms" / "added_p99_ms"
    bound: float
    at_least: bool
    label: str


CHECKS = (
    Check("closed-nonstream", "gateway-memory", "ratio", 0.11, True, "non-stream, memory index"),
    Check("closed-nonstream", "gateway-redis", "ratio", 0.09, True, "non-stream, Redis index"),
    Check("closed-stream", "gateway-memory", "ratio", 0.55, True, "stream 64, memory index"),
    Check("closed-stream", "gateway-redis", "ratio", 0.55, True, "stream 64, Redis index"),
    Check("open-nonstream", "gateway-memory", "added_p50_ms", 1.0, False, "open, memory index"),
    Check("open-nonstream", "gateway-memory", "added_p99_ms", 3.0, False, "open, memory index"),
    Check("open-nonstream", "gateway-redis", "added_p50_ms", 1.0, False, "open, Redis index"),
    Check("open-nonstream", "gateway-redis", "added_p99_ms", 3.0, False, "open, Redis index"),
)


def _direct(runs: list[Run], scenario: str) -> Run | None:
    for run in runs:
        if run.scenario.name == scenario and run.target == DIRECT:
            return run
    return None


def comparison(run: Run, runs: list[Run]) -> dict[str, float]:
    """Throughput ratio and added latency (ms) of a run against direct in the same scenario."""
    direct = _direct(runs, run.scenario.name)
    if run.target == DIRECT or run.result is None or direct is None or direct.result is None:
        return {}
    out: dict[str, float] = {}
    if direct.result.rps > 0:
        out["ratio"] = round(run.result.rps / direct.result.rps, 4)
    for p in PERCENTILES:
        added = run.result.latency_ms[p] - direct.result.latency_ms[p]
        out[f"added_{p}_ms"] = round(added, 4)
    return out


def run_record(run: Run, runs: list[Run]) -> dict[str, Any]:
    """One run as JSON."""
    return {
        "scenario": run.scenario.name,
        "stream": run.scenario.stream,
        "max_tokens": run.scenario.max_tokens,
        "system_bytes": run.scenario.system_bytes,
        "open_loop": run.scenario.open_loop,
        "target": run.target,
        "clean": run.clean,
        "failure": run.failure,
        **(run.result.to_dict() if run.result is not None else {}),
        "cpu_s": {role: round(s, 4) for role, s in run.cpu_s.items()},
        "cpu_s_per_1k_requests": run.cpu_per_1k(),
        "other_processes_cpu_s": None if run.other_cpu_s is None else round(run.other_cpu_s, 3),
        "other_processes_cores": None if run.other_cores is None else round(run.other_cores, 3),
        "machine_cpu_s": run.machine_cpu_s,
        "disturbed": run.disturbed,
        "redis_commands": run.redis_commands,
        "redis_commands_per_request": _per_request(run.redis_commands, run),
        "redis_scripts": run.redis_scripts,
        "redis_scripts_per_request": _per_request(run.redis_scripts, run),
        "vs_direct": comparison(run, runs),
    }


def _per_request(count: int | None, run: Run) -> float | None:
    if count is None or run.result is None or run.result.requests == 0:
        return None
    return round(count / run.result.requests, 3)


def evaluate(runs: list[Run], checks: tuple[Check, ...] = CHECKS) -> list[dict[str, Any]]:
    """Each check's value and verdict; checks of targets that were not run are left out."""
    out = []
    for check in checks:
        run = next(
            (r for r in runs if r.scenario.name == check.scenario and r.target == check.target),
            None,
        )
        if run is None:
            continue
        direct = _direct(runs, check.scenario)
        value = comparison(run, runs).get(check.figure)
        note, valid = "", True
        if not run.clean or direct is None or not direct.clean:
            note, valid = "run or its direct baseline had errors or failed: figure not valid", False
        elif run.disturbed or direct.disturbed:
            note = "other processes were busy during the run or its baseline: figure disturbed"
        passed = value is not None and valid
        if passed and value is not None:
            passed = value >= check.bound if check.at_least else value <= check.bound
        out.append(
            {
                "scenario": check.scenario,
                "target": check.target,
                "label": check.label,
                "figure": check.figure,
                "value": value,
                "bound": check.bound,
                "op": ">=" if check.at_least else "<=",
                "passed": passed,
                "note": note,
            }
        )
    return out


def check_lines(results: list[dict[str, Any]]) -> list[str]:
    """PASS/FAIL lines for the printed report."""
    lines = []
    for c in results:
        verdict = "PASS" if c["passed"] else "FAIL"
        if c["figure"] == "ratio":
            value = "n/a" if c["value"] is None else f"{c['value'] * 100:.1f}%"
            bound = f"{c['bound'] * 100:.0f}% of direct req/s"
        else:
            value = "n/a" if c["value"] is None else f"{c['value']:+.3f} ms"
            bound = f"{c['bound']:g} ms ({c['figure'].removeprefix('added_').removesuffix('_ms')})"
        note = f"  [{c['note']}]" if c["note"] else ""
        lines.append(f"{verdict}  {c['label']:<26} {value:>10}  (target {c['op']} {bound}){note}")
    return lines


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(runs: list[Run]) -> str:
    """The printed table: one row per scenario x target."""
    head = (
        f"{'scenario':<20}{'target':<16}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'vs direct':>10}{'+p50 ms':>9}{'+p99 ms':>9}{'gw CPU':>8}{'be CPU':>8}"
        f"{'rds scr':>8}{'rds CPU':>8}{'other':>7}{'errors':>8}"
    )
    lines = [head, "-" * len(head)]
    for run in runs:
        name = f"{run.scenario.name:<20}{run.target:<16}"
        r = run.result
        if r is None:
            lines.append(f"{name}FAILED: {run.failure}")
            continue
        cmp = comparison(run, runs)
        cpu = run.cpu_per_1k()
        ratio = cmp.get("ratio")
        errors = f"{r.error_total}" + (" !!!" if r.error_total else "")
        other = run.other_cores
        other_text = "-" if other is None else f"{other:.2f}" + ("!" if run.disturbed else "")
        lines.append(
            f"{name}{r.rps:>9.0f}{r.latency_ms['p50']:>9.2f}{r.latency_ms['p90']:>9.2f}"
            f"{r.latency_ms['p99']:>9.2f}"
            f"{'-' if ratio is None else f'{ratio * 100:.1f}%':>10}"
            f"{_fmt(cmp.get('added_p50_ms'), '+.2f'):>9}{_fmt(cmp.get('added_p99_ms'), '+.2f'):>9}"
            f"{_fmt(cpu.get('gateway'), '.3f'):>8}{_fmt(cpu.get('backend'), '.3f'):>8}"
            f"{_fmt(_per_request(run.redis_scripts, run), '.2f'):>8}"
            f"{_fmt(cpu.get('redis'), '.3f'):>8}{other_text:>7}{errors:>8}"
        )
    lines += [
        "gw CPU / be CPU: CPU seconds per 1,000 requests of the gateway / backend process;",
        "rds scr: Redis script calls (EVALSHA...) per request; rds CPU: redis-server CPU s/1k;",
        f"other: cores kept busy by other processes during the run (! above {DISTURBED_CORES}:",
        "figures disturbed)",
    ]
    return "\n".join(lines)


def error_lines(runs: list[Run]) -> list[str]:
    """Loud lines for every run that failed or saw errors."""
    lines = []
    for run in runs:
        where = f"{run.scenario.name} / {run.target}"
        if run.failure is not None:
            lines.append(f"!!! {where}: FAILED: {run.failure}")
        elif run.result is not None and run.result.error_total:
            kinds = ", ".join(f"{k} {v}" for k, v in run.result.errors.items() if v)
            lines.append(f"!!! {where}: {run.result.error_total} errors ({kinds}): figures suspect")
        if run.disturbed and run.other_cores is not None:
            top = ", ".join(
                f"pid {p['pid']} {(p['cmdline'] or p['comm'])[:60]!r} {p['cpu_s']:.1f} s"
                for p in run.machine_cpu_s.get("top_other", [])
            )
            lines.append(
                f"!!! {where}: other processes kept {run.other_cores:.2f} cores busy during the "
                f"run (busiest: {top}): figures disturbed, rerun on a quiet machine"
            )
    return lines
