"""Overhead benchmark (bench/README.md): wrk at a simulated backend, direct and via the gateway."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import httpx

from bench.overhead_cpu import Sample, split, tree_cpu_seconds
from bench.overhead_options import MODEL, REPO, Options, build_parser, options_from_args
from bench.overhead_probe import probe
from bench.overhead_report import (
    DIRECT,
    DISTURBED_CORES,
    Run,
    Scenario,
    check_lines,
    error_lines,
    evaluate,
    run_record,
    table,
)
from bench.overhead_stack import (
    REDIS_HINT,
    Stack,
    Target,
    redis_load,
    serve_accepts_workers,
)
from bench.overhead_wrk import WrkError, find_wrk, run_wrk, wrk_version
from bench.procs import StartupError

SHORT_PROMPT_NOTE = (
    "the small request's prompt is shorter than one prefix block (hashing.block_bytes, 256 by "
    "default), so the gateway neither looks it up in nor records it to the index: those runs "
    "measure the proxy path; closed-long-prompt adds a system message spanning whole blocks so "
    "that every request is looked up in and recorded to the index"
)
SIM_STREAM_NOTE = (
    "zero-latency simulator: a stream's events (role chunk, one event per token, [DONE]) are "
    "built in one buffer and sent in a single write, so bytes and event count match a 64-token "
    "stream but not the 64 separate writes of a real engine"
)


def _cpu(target: Target) -> dict[str, float]:
    pids = {"gateway": target.gateway_pid, "backend": target.backend_pid, "redis": target.redis_pid}
    return {role: tree_cpu_seconds(pid) for role, pid in pids.items() if pid is not None}


def _redis(target: Target) -> tuple[int, int] | None:
    return None if target.redis_url is None else redis_load(target.redis_url)


def wait_quiet(limit_s: int) -> float:
    """Wait (at most limit_s) until other processes keep under DISTURBED_CORES busy; their cores."""
    deadline = time.monotonic() + limit_s
    announced = False
    while True:
        before = Sample.take()
        time.sleep(1.0)
        other = split(before, Sample.take(), os.getpid())["other"]
        if other < DISTURBED_CORES or time.monotonic() >= deadline:
            return float(other)
        if not announced:
            print(f" (waiting: other processes busy, {other:.2f} cores)", end="", flush=True)
            announced = True


def measure(wrk: str, target: Target, scenario: Scenario, opts: Options, logs: Path) -> Run:
    """Warm up, then one measured wrk run with CPU time read before and after."""
    run = Run(scenario, target.name)
    stem = f"{scenario.name}-{target.name}"
    url = f"{target.url}/v1/chat/completions"
    try:
        if opts.wait_quiet_s:
            wait_quiet(opts.wait_quiet_s)
        if opts.warmup_s:
            run_wrk(wrk, url, opts.load(scenario, opts.warmup_s), logs / f"{stem}-warmup.txt")
            time.sleep(0.5)
        redis_before, before, sample = _redis(target), _cpu(target), Sample.take()
        run.result = run_wrk(wrk, url, opts.load(scenario, opts.duration_s), logs / f"{stem}.txt")
        machine = split(sample, Sample.take(), os.getpid())
        after = _cpu(target)
        run.cpu_s = {role: after[role] - before[role] for role in before if role in after}
        run.machine_cpu_s = machine
        run.other_cpu_s = float(machine["other"])
        redis_after = _redis(target)
        if redis_before is not None and redis_after is not None:
            run.redis_commands = redis_after[0] - redis_before[0] - 1  # minus our own INFO
            run.redis_scripts = redis_after[1] - redis_before[1]
    except (WrkError, OSError) as exc:
        run.failure = str(exc)
    time.sleep(1.0)  # let background work of the last run (index records, polls) drain
    return run


def _probe(target: Target, opts: Options) -> dict[str, Any]:
    out = {
        "nonstream": probe(target.url, MODEL, 8, stream=False),
        "stream": probe(target.url, MODEL, 64, stream=True),
    }
    if opts.long_prompt_bytes:
        out["long_prompt"] = probe(target.url, MODEL, 8, False, opts.long_prompt_bytes)
    return out


def _start_targets(stack: Stack, opts: Options, probes: dict[str, Any]) -> list[Target]:
    backend_url, backend_pid = stack.start_backend()
    targets = [Target(DIRECT, backend_url, None, backend_pid, None)]
    url, pid = stack.start_gateway("gateway-memory", backend_url, None, workers=1)
    targets.append(Target("gateway-memory", url, pid, backend_pid, None))
    if not opts.skip_redis:
        redis_url, redis_pid = stack.start_redis()
        url, pid = stack.start_gateway(
            "gateway-redis", backend_url, redis_url, opts.gateway_workers
        )
        targets.append(Target("gateway-redis", url, pid, backend_pid, redis_pid, redis_url))
    for target in targets:
        try:
            probes[target.name] = _probe(target, opts)
        except (httpx.HTTPError, ValueError) as exc:
            raise StartupError(f"probe of {target.name} failed: {exc!r}") from exc
        bad = [kind for kind, result in probes[target.name].items() if not result["ok"]]
        if bad:
            raise StartupError(f"probe of {target.name} failed ({bad}): {probes[target.name]}")
    return targets


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def document(opts: Options, wrk: str, runs: list[Run], extra: dict[str, Any]) -> dict[str, Any]:
    """Everything the run measured, as one JSON document."""
    checks = evaluate(runs)
    complete = bool(runs) and "startup_error" not in extra and not extra.get("interrupted")
    return {
        "benchmark": "overhead",
        "machine": extra.get("machine", {}) | {"loadavg_at_end": list(os.getloadavg())},
        "commit": _commit(),
        "wrk": {
            "version": wrk_version(wrk),
            "threads": opts.threads,
            "closed_loop_connections": opts.connections,
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "timeout_s": opts.timeout_s,
            "long_prompt_bytes": opts.long_prompt_bytes,
            "wait_quiet_s": opts.wait_quiet_s,
            "open_loop": {
                "rate": opts.rate,
                "connections": opts.open_connections,
                "pacing": "per-thread fixed schedule (bench/lua/overhead_open.lua)",
            },
        },
        "fleet": {"backends": 1, "zero_latency": True, "model": MODEL, "note": SIM_STREAM_NOTE},
        "request_note": SHORT_PROMPT_NOTE,
        "gateway": {"memory_workers": 1, "redis_workers": opts.gateway_workers},
        **{key: value for key, value in extra.items() if key != "machine"},
        "runs": [run_record(run, runs) for run in runs],
        "checks": checks,
        "clean": complete and all(run.clean for run in runs),
        "all_checks_passed": all(c["passed"] for c in checks),
    }


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def run_benchmark(opts: Options, wrk: str, argv: list[str]) -> int:
    """Start everything, measure every scenario x target, report; returns the exit status."""
    logs = opts.out.parent / "logs" / opts.out.stem
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    extra: dict[str, Any] = {
        "argv": argv,
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "probes": {},
    }
    started = time.monotonic()
    status = 0
    try:
        with Stack(REPO, logs, MODEL) as stack:
            targets = _start_targets(stack, opts, extra["probes"])
            for scenario in opts.scenarios():
                for target in targets:
                    print(f"... {scenario.name:<19} {target.name:<15}", end="", flush=True)
                    run = measure(wrk, target, scenario, opts, logs)
                    runs.append(run)
                    r = run.result
                    print(f" {r.rps:8.0f} req/s" if r else f" FAILED: {run.failure}", flush=True)
    except StartupError as exc:
        extra["startup_error"] = str(exc)
        print(f"!!! startup failed: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        extra["interrupted"] = True
        print("\ninterrupted: children stopped, partial results written", file=sys.stderr)
        status = 130
    extra["wall_s"] = round(time.monotonic() - started, 1)
    doc = document(opts, wrk, runs, extra)
    _write(opts.out, doc)
    print()
    print(table(runs))
    print()
    for line in check_lines(doc["checks"]):
        print(line)
    for line in error_lines(runs):
        print(line)
    print(f"\nresults: {opts.out}  logs: {logs}")
    if status:
        return status
    if not doc["clean"]:
        return 1
    return 3 if opts.check and not doc["all_checks_passed"] else 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; 0 when every run was clean, 1 on errors, 2 when a tool is missing."""
    args = build_parser().parse_args(argv)
    opts = options_from_args(args)
    try:
        wrk = find_wrk()
    except WrkError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not opts.skip_redis and shutil.which("redis-server") is None:
        print(REDIS_HINT, file=sys.stderr)
        return 2
    if opts.gateway_workers != 1 and not serve_accepts_workers(REPO):
        print("`prefix-gateway serve` does not accept --workers yet", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    return run_benchmark(opts, wrk, list(sys.argv if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
