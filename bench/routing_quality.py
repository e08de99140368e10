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

from bench.catalog import DEFAULT_WORKLOADS, FULL, QUICK, WORKLOAD_NAMES
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
    p.add_argument(
        "--workloads", default=",".join(DEFAULT_WORKLOADS),
        help=f"subset of {','.join(WORKLOAD_NAMES)} (default {','.join(DEFAULT_WORKLOADS)})",
    )  # fmt: skip
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
    s = p.add_argument_group("simulator (passed to prefix-gateway sim; default: its own)")
    s.add_argument("--bytes-per-token", type=float, default=None, help="tokenizer mean ratio")
    s.add_argument("--scheduler", choices=("fifo", "batched"), default=None)
    s.add_argument("--max-batched-tokens", type=int, default=None)
    s.add_argument(
        "--decode-batch-slowdown", type=float, default=None,
        help="fractional increase of per-token decode time per extra running request",
    )  # fmt: skip
    s.add_argument(
        "--speeds", default=None,
        help="relative prefill speeds per backend, e.g. 1,1,1,1,2,2,2,2 (mean speed unchanged)",
    )  # fmt: skip
    g = p.add_argument_group("gateway")
    g.add_argument(
        "--kv-told", choices=("true", "default"), default="true",
        help="tell the gateway each backend's true KV capacity, or leave its default",
    )  # fmt: skip
    g.add_argument(
        "--tell-speeds", choices=("true", "equal"), default="true",
        help="configure each backend's true prefill speed, or all equal to the mean",
    )  # fmt: skip
    g.add_argument(
        "--gateways", type=int, default=1,
        help="gateway processes sharing the Redis index; requests spread round-robin",
    )  # fmt: skip
    g.add_argument("--gateway-workers", type=int, default=1, help="serve --workers N (Redis)")
    return p


def _speeds(text: str | None, backends: int) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        speeds = tuple(float(x) for x in _csv(text))
    except ValueError:
        raise SystemExit(f"--speeds: not a list of numbers: {text!r}") from None
    if not speeds or any(x <= 0 for x in speeds) or len(speeds) > backends:
        raise SystemExit(f"--speeds: 1..{backends} positive numbers")
    return speeds


def options_from_args(args: argparse.Namespace) -> Options:
    """Validate flags into run options."""
    workloads = _csv(args.workloads)
    unknown = [w for w in workloads if w not in WORKLOAD_NAMES]
    if unknown or not workloads:
        raise SystemExit(f"--workloads: unknown {unknown}; choose from {','.join(WORKLOAD_NAMES)}")
    policies = _csv(args.policies)
    if not policies:
        raise SystemExit("--policies: at least one policy")
    if not 1 <= args.gateways <= 8 or not 1 <= args.gateway_workers <= 8:
        raise SystemExit("--gateways and --gateway-workers must be within 1..8")
    if args.gateways > 1 and args.gateway_workers > 1:
        raise SystemExit("--gateways and --gateway-workers: one or the other")
    if (args.gateways > 1 or args.gateway_workers > 1) and args.index != "redis":
        args.index = "redis"  # several gateways or workers must share the Redis index
    if args.index == "redis" and not args.redis_url:
        raise SystemExit("--index redis (and --gateways/--gateway-workers > 1) needs --redis-url")
    if args.bytes_per_token is not None and not 1.0 <= args.bytes_per_token <= 16.0:
        raise SystemExit("--bytes-per-token must be within 1..16")
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
        bytes_per_token=args.bytes_per_token,
        scheduler=args.scheduler,
        max_batched_tokens=args.max_batched_tokens,
        decode_batch_slowdown=args.decode_batch_slowdown,
        speeds=_speeds(args.speeds, args.backends),
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
        kv_told=args.kv_told == "true",
        tell_speeds=args.tell_speeds,
        gateways=args.gateways,
        gateway_workers=args.gateway_workers,
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
