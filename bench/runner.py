"""Orchestration: plan each workload, run every (repeat, policy) on a fresh fleet, report."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.catalog import Sizes, build_workload
from bench.checks import Check, CheckContext, workload_checks
from bench.harness import (
    MODEL,
    FleetSettings,
    GatewayOptions,
    RunEnvironment,
    gateway_config,
    sim_flags,
)
from bench.plan import PlanParams, WorkloadPlan, plan_workload
from bench.plot import ttft_cdf_png
from bench.procs import StartupError
from bench.replay import Outcome, ReplayConfig, Replayer
from bench.report import backend_deltas, summarize
from bench.runutil import clean_redis, run_async, write_json
from bench.tables import LAG_WARN_S, plan_lines, policy_table, run_line

_DRAIN_MIN_S = 30.0
_DEADLINE_SPANS = 3.0
_START_ATTEMPTS = 2
# The counters are read again this far into the arrivals: what backends did after it is the
# fleet once the gateway had time to learn it (the speed classes' shares after warm-up).
WARMUP_FRACTION = 1 / 3
_LAG_RERUNS = 2  # a run whose client send lag p99 exceeds LAG_WARN_S is rerun up to this often


def _lagged(record: dict[str, Any]) -> bool:
    return bool(record.get("summary", {}).get("send_lag_p99_s", 0.0) > LAG_WARN_S)


@dataclass(frozen=True, slots=True)
class Options:
    """Everything one invocation needs."""

    workloads: list[str]
    policies: list[str]
    repeat: int
    quick: bool
    sizes: Sizes
    params: PlanParams
    out: Path
    trace: Path
    seed: int
    index: str
    redis_url: str | None
    repo: Path
    kv_told: bool = True
    tell_speeds: str = "true"
    gateways: int = 1
    gateway_workers: int = 1

    def gateway_options(self, policy: str, key_prefix: str = "pgw") -> GatewayOptions:
        """The gateway settings of one run of `policy`."""
        return GatewayOptions(
            policy,
            self.index,
            self.redis_url,
            key_prefix=key_prefix,
            kv_told=self.kv_told,
            tell_speeds=self.tell_speeds,
            gateways=self.gateways,
            workers=self.gateway_workers,
        )


def accepted_policies(options: Options, workdir: Path) -> dict[str, str | None]:
    """Ask `prefix-gateway check-config` about each policy: None = accepted, else the reason."""
    fleet = FleetSettings(1, 16, 1024, 10000.0, 20.0, 1.0)
    out: dict[str, str | None] = {}
    for policy in options.policies:
        path = workdir / f"check-{len(out)}.yaml"
        gw = options.gateway_options(policy)
        path.write_bytes(gateway_config(fleet, gw, 8080, 8001))
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", str(path)],
            cwd=options.repo,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        out[policy] = None if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()
    return out


def run_one(
    plan: WorkloadPlan,
    policy: str,
    repeat: int,
    options: Options,
    logdir: Path,
    known_flags: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """One run on a fresh fleet and gateway (startup retried once); returns its JSON record."""
    logdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"policy": policy, "repeat": repeat, "logs": str(logdir)}
    started = time.monotonic()
    for attempt in range(_START_ATTEMPTS):
        try:
            _attempt(plan, policy, repeat, options, logdir, record, known_flags)
            break
        except StartupError as exc:
            record["failed"] = str(exc)
            if attempt + 1 < _START_ATTEMPTS:
                print(f"  (startup failed, retrying: {str(exc).splitlines()[0]})", flush=True)
        except httpx.HTTPError as exc:
            record["failed"] = f"reading /sim/stats failed: {exc!r}"
            break
    record["wall_s"] = time.monotonic() - started
    record["host_load_1min"] = os.getloadavg()[0]
    return record


def _attempt(
    plan: WorkloadPlan,
    policy: str,
    repeat: int,
    options: Options,
    logdir: Path,
    record: dict[str, Any],
    known_flags: frozenset[str],
) -> None:
    prefix = f"pgwbench-{os.getpid()}-{plan.workload.name}-{policy}-{repeat}"
    gw = options.gateway_options(policy, prefix)
    fleet = plan.fleet
    try:
        with RunEnvironment(fleet, gw, logdir, options.repo, known_flags) as env:
            before = env.stats()
            deadline = _DEADLINE_SPANS * plan.span_s * fleet.time_scale + _DRAIN_MIN_S
            urls = tuple(env.gateway_urls)
            config = ReplayConfig(urls, MODEL, fleet.time_scale, deadline, deadline)
            replayer = Replayer(config, plan.workload.requests)
            warmup_s = WARMUP_FRACTION * plan.span_s * fleet.time_scale
            outcomes, warm = run_async(_replay_marked(replayer, warmup_s, env.stats))
            after = env.stats()
    finally:
        if options.index == "redis":
            clean_redis(options.redis_url, prefix)
    record.pop("failed", None)
    deltas = backend_deltas(before, after)
    warm_deltas = backend_deltas(warm, after)
    record["summary"] = summarize(outcomes, deltas, fleet.time_scale, warm_deltas).to_dict()
    record["backends"] = [dataclasses.asdict(d) for d in deltas]
    # The backends' prompt tokens over the plan's offline count: 1.0 when the benchmark
    # tokenizes exactly as the simulator does (lower when requests failed before prefill).
    offline = plan.upper_bound.query_tokens
    record["token_agreement"] = sum(d.query_tokens for d in deltas) / offline if offline else 0.0
    record["ttft_sim"] = [
        round(t / fleet.time_scale, 6) for o in outcomes if (t := o.ttft_or_censored) is not None
    ]
    record["request_columns"] = REQUEST_COLUMNS
    record["requests"] = request_rows(plan, outcomes, fleet.time_scale)


def request_rows(plan: WorkloadPlan, outcomes: Sequence[Outcome], scale: float) -> list[list[Any]]:
    """One row per request, for looking into a tail: `REQUEST_COLUMNS`, times in simulated s."""
    groups = {r.rid: r.group for r in plan.workload.requests}

    def sim(t: float | None) -> float | None:
        return None if t is None else round(t / scale, 6)

    return [
        [
            o.rid,
            groups.get(o.rid, -1),
            sim(o.scheduled),
            o.gateway,
            o.backend,
            sim(o.ttft_or_censored),
            o.prompt_tokens,
            o.cached_tokens,
        ]
        for o in outcomes
    ]


REQUEST_COLUMNS = ("rid", "group", "scheduled", "gateway", "backend", "ttft", "prompt", "cached")


_T = TypeVar("_T")


async def _replay_marked(
    replayer: Replayer, mark_s: float, take: Callable[[], _T]
) -> tuple[Sequence[Outcome], _T]:
    """Run the replay, and `take()` once `mark_s` wall seconds of its schedule have passed."""
    replay = asyncio.create_task(replayer.run())
    await asyncio.sleep(mark_s)  # a point in the arrival schedule, not a synchronisation
    marked = await asyncio.to_thread(take)
    return await replay, marked


def run_benchmark(options: Options, argv: list[str]) -> int:
    """Run everything, print tables and checks, write JSON and plots; 1 if any run had errors."""
    out_dir = options.out.parent
    logs_root = out_dir / "logs" / options.out.stem
    shutil.rmtree(logs_root, ignore_errors=True)
    result: dict[str, Any] = {
        "benchmark": "routing_quality",
        "command": argv,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": options.seed,
        "quick": options.quick,
        "repeat": options.repeat,
        "policies": options.policies,
        "index": options.index,
        "kv_told": options.kv_told,
        "tell_speeds": options.tell_speeds,
        "gateways": options.gateways,
        "gateway_workers": options.gateway_workers,
        "params": dataclasses.asdict(options.params),
        "trace": options.trace.name,
        "cpu_count": os.cpu_count(),
        "workloads": {},
    }
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > cpus / 2:
        print(
            f"!! host load average {load:.1f} on {cpus} CPUs before starting: other work is "
            "running; latency figures will be noisy (client lag and host load are recorded)"
        )
    with tempfile.TemporaryDirectory(prefix="routing-quality-") as tmp:
        verdicts = accepted_policies(options, Path(tmp))
    result["rejected_policies"] = {p: r for p, r in verdicts.items() if r}
    for policy, reason in verdicts.items():
        if reason:
            print(f"!!! policy {policy!r} rejected by check-config, not run: {reason}")
    known = sim_flags(options.repo)
    result["sim_flags"] = sorted(known)
    all_checks: list[Check] = []
    failures = 0
    try:
        for name in options.workloads:
            section, checks, bad = _run_workload(name, options, verdicts, logs_root, result, known)
            result["workloads"][name] = section
            all_checks.extend(checks)
            failures += bad
            write_json(options.out, result)
    finally:
        result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        result["checks"] = [c.to_dict() for c in all_checks]
        write_json(options.out, result)
    print("\n== checks (issue 3, 'What it must show') ==")
    for check in all_checks:
        print(check.line())
    print(f"\nresults: {options.out}")
    if failures:
        print(f"\n!!! {failures} runs had failed requests or failed to start: see above and the "
              "JSON; their figures are suspect")  # fmt: skip
    return 1 if failures else 0


def _run_workload(
    name: str,
    options: Options,
    verdicts: dict[str, str | None],
    logs_root: Path,
    result: dict[str, Any],
    known_flags: frozenset[str],
) -> tuple[dict[str, Any], list[Check], int]:
    print(f"\n== workload ({name}) ==", flush=True)
    p = options.params
    rel = [p.speeds[i % len(p.speeds)] for i in range(p.backends)] if p.speeds else [1.0]
    fast = sum(r for r in rel if r == max(rel)) / sum(rel)
    context = CheckContext(p.decode_batch_slowdown, len(set(rel)), options.tell_speeds, fast)
    try:
        tokenizer = p.tokenizer
        workload = build_workload(name, options.sizes, options.seed, options.trace, tokenizer)
        plan = plan_workload(workload, p)
    except (OSError, ValueError) as exc:
        print(f"!!! workload ({name}) could not be built: {exc}")
        section: dict[str, Any] = {"error": str(exc), "runs": []}
        checks = workload_checks(name, float("nan"), {}, context)
        return section, checks, 1
    print(f"  {workload.title}")
    for line in plan_lines(plan):
        print(line, flush=True)
    section = {"title": workload.title, "plan": plan.to_dict(), "runs": []}
    result["workloads"][name] = section
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in options.policies}
    failures = 0
    for repeat in range(options.repeat):
        for policy in options.policies:
            if verdicts.get(policy):
                continue
            logdir = logs_root / f"{name}-{policy}-{repeat + 1}"
            for attempt in range(_LAG_RERUNS + 1):
                record = run_one(plan, policy, repeat, options, logdir, known_flags)
                print(run_line(record), flush=True)
                if not _lagged(record) or attempt == _LAG_RERUNS:
                    break
                print("    (client send lag: not a figure, rerunning)", flush=True)
                section.setdefault("discarded_lagged_runs", []).append(record)
            section["runs"].append(record)
            if "summary" in record:
                runs[policy].append(record["summary"])
                failures += bool(record["summary"]["errors"])
            else:
                failures += 1
            write_json(options.out, result)
    print()
    print(policy_table(runs))
    print("  (TTFT in simulated seconds; ± is half the range over repeats)")
    checks = workload_checks(name, plan.upper_bound.hit_rate, runs, context)
    for check in checks:
        print("  " + check.line())
    section["checks"] = [c.to_dict() for c in checks]
    ttfts = {
        p: [t for r in section["runs"] if r["policy"] == p for t in r.get("ttft_sim", [])]
        for p in options.policies
    }
    png = options.out.parent / f"{options.out.stem}_ttft_cdf_{name}.png"
    title = f"({name}) {workload.title}: TTFT CDF"
    note = f"upper-bound hit rate {plan.upper_bound.hit_rate:.1%}"
    written = ttft_cdf_png(png, title, ttfts, note)
    section["plot"] = written.name if written else None
    if written is None:
        print("  (matplotlib not installed: no plot; pip install '.[bench]')")
    return section, checks, failures
