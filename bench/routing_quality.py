"""Routing-quality benchmark: replay workloads (a)-(e) through the gateway for every policy.

Run `python bench/routing_quality.py --help`; see bench/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import signal
import time
from collections.abc import Sequence
from types import FrameType

from bench.catalog import FULL, QUICK, WORKLOAD_NAMES
from bench.plan import PlanParams
from bench.runner import Options, run_benchmark

REPO = Path(__file__).resolve().parent.parent
ALL_POLICIES = ("round_robin", "least_loaded", "sglang_threshold", "profile")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(
        prog="routing_quality", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--workloads", default=",".join(WORKLOAD_NAMES), help="subset of a,b,c,d,e")
    p.add_argument("--policies", default=",".join(ALL_POLICIES), help="routing.policy names")
    p.add_argument("--repeat", type=int, default=None, help="runs per policy (default 2, quick 1)")
    p.add_argument("--quick", action="store_true", help="smaller workloads, shorter runs")
    p.add_argument(
        "--time-scale", type=float, default=None,
        help="wall seconds per simulated second (default: per workload, for the wall target)",
    )  # fmt: skip
    p.add_argument("--wall-target", type=float, default=None, help="wall s per run (14; quick 6)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "routing_quality.json")
    p.add_argument(
        "--trace", type=Path, default=REPO.parent / "shared" / "traces" / "synthetic_trace.jsonl",
        help="Mooncake JSONL trace for workload (c) (default ../shared/traces/... of the repo)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", choices=("memory", "redis"), default="memory")
    p.add_argument("--redis-url", default=None, help="with --index redis")
    p.add_argument("--target-util", type=float, default=0.65, help="round-robin prefill busy")
    p.add_argument("--decode-ms", type=float, default=20.0, help="simulated ms per output token")
    p.add_argument("--backends", type=int, default=8)
    p.add_argument("--block-size", type=int, default=16, help="simulator KV block (tokens)")
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    """Validate flags into run options."""
    workloads = _csv(args.workloads)
    unknown = [w for w in workloads if w not in WORKLOAD_NAMES]
    if unknown or not workloads:
        raise SystemExit(f"--workloads: unknown {unknown}; choose from {','.join(WORKLOAD_NAMES)}")
    policies = _csv(args.policies)
    if not policies:
        raise SystemExit("--policies: at least one policy")
    if args.index == "redis" and not args.redis_url:
        raise SystemExit("--index redis needs --redis-url")
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 2)
    if not 1 <= repeat <= 10:
        raise SystemExit("--repeat must be within 1..10")
    if args.time_scale is not None and args.time_scale <= 0:
        raise SystemExit("--time-scale must be > 0")
    wall = args.wall_target if args.wall_target is not None else (6.0 if args.quick else 14.0)
    params = PlanParams(
        backends=args.backends,
        block_size=args.block_size,
        decode_ms=args.decode_ms,
        target_util=args.target_util,
        wall_target_s=wall,
        time_scale=args.time_scale,
    )
    return Options(
        workloads=workloads,
        policies=policies,
        repeat=repeat,
        quick=args.quick,
        sizes=QUICK if args.quick else FULL,
        params=params,
        out=args.out,
        trace=args.trace,
        seed=args.seed,
        index=args.index,
        redis_url=args.redis_url,
        repo=REPO,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into SIGINT, which asyncio's runner and the `with` blocks already handle.
    os.kill(os.getpid(), signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (1 when any run had errors)."""
    args = build_parser().parse_args(argv)
    options = options_from_args(args)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        status = run_benchmark(options, list(sys.argv if argv is None else argv))
    except KeyboardInterrupt:
        print("\ninterrupted: children stopped, partial results written", file=sys.stderr)
        return 130
    print(f"total wall time {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
