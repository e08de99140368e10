"""Command-line options of the overhead benchmark and the scenarios they select."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.overhead_report import Scenario
from bench.overhead_wrk import WrkLoad

REPO = Path(__file__).resolve().parent.parent
MODEL = "sim-llama-8b"
DESCRIPTION = (
    "Overhead benchmark: wrk straight at a zero-latency simulated backend, then through the "
    "gateway (memory and Redis index); see bench/README.md"
)


@dataclass(frozen=True)
class Options:
    """Validated command-line options."""

    duration_s: int
    warmup_s: int
    threads: int
    connections: int
    rate: float
    open_connections: int
    timeout_s: int
    long_prompt_bytes: int
    skip_redis: bool
    wait_quiet_s: int
    gateway_workers: int
    out: Path
    check: bool

    def scenarios(self) -> list[Scenario]:
        """The scenarios to run, in order."""
        out = [Scenario("closed-nonstream", stream=False, max_tokens=8, open_loop=False)]
        if self.long_prompt_bytes:
            out.append(
                Scenario(
                    "closed-long-prompt",
                    stream=False,
                    max_tokens=8,
                    open_loop=False,
                    system_bytes=self.long_prompt_bytes,
                )
            )
        out.append(Scenario("closed-stream", stream=True, max_tokens=64, open_loop=False))
        out.append(Scenario("open-nonstream", stream=False, max_tokens=8, open_loop=True))
        return out

    def load(self, scenario: Scenario, duration_s: int) -> WrkLoad:
        """The wrk load of a scenario."""
        return WrkLoad(
            threads=self.threads,
            connections=self.open_connections if scenario.open_loop else self.connections,
            duration_s=duration_s,
            timeout_s=self.timeout_s,
            stream=scenario.stream,
            max_tokens=scenario.max_tokens,
            model=MODEL,
            system_bytes=scenario.system_bytes,
            rate=self.rate if scenario.open_loop else None,
        )


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(prog="overhead", description=DESCRIPTION)
    p.add_argument("--duration", type=int, default=None, help="seconds per run (15; quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up seconds per run (2; quick 1)")
    p.add_argument("--quick", action="store_true", help="5 s runs, 1 s warm-ups")
    p.add_argument("--connections", type=int, default=32, help="closed-loop connections (32)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s (200)")
    p.add_argument("--open-connections", type=int, default=16, help="open-loop connections (16)")
    p.add_argument("--timeout", type=int, default=5, help="wrk per-request timeout, s (5)")
    p.add_argument(
        "--long-prompt-bytes", type=int, default=2048,
        help="system message of the closed-long-prompt scenario (2048 = 8 blocks; 0 = skip it)",
    )  # fmt: skip
    p.add_argument("--skip-redis", action="store_true", help="no Redis-index gateway runs")
    p.add_argument(
        "--wait-quiet", type=int, default=0, metavar="S",
        help="before each run wait up to S s for other processes to go quiet (default 0: no wait)",
    )  # fmt: skip
    p.add_argument(
        "--gateway-workers", type=int, default=1,
        help="`serve --workers N` for the Redis-index gateway (the memory index runs 1 worker)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "overhead.json")
    p.add_argument("--check", action="store_true", help="exit 3 when a target of issue 4 fails")
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    """Validate flags into options."""
    duration = args.duration if args.duration is not None else (5 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if not 1 <= duration <= 600:
        raise SystemExit("--duration must be within 1..600 s")
    if not 0 <= warmup <= 60:
        raise SystemExit("--warmup must be within 0..60 s")
    if args.threads < 1 or args.connections < args.threads or args.open_connections < args.threads:
        raise SystemExit("need threads >= 1 and at least one connection per thread")
    if not 0 < args.rate <= 100_000:
        raise SystemExit("--rate must be within (0, 100000]")
    if not 0 <= args.long_prompt_bytes <= 1_000_000:
        raise SystemExit("--long-prompt-bytes must be within 0..1000000")
    if not 1 <= args.timeout <= 600:
        raise SystemExit("--timeout must be within 1..600 s")
    if not 0 <= args.wait_quiet <= 3600:
        raise SystemExit("--wait-quiet must be within 0..3600 s")
    if not 1 <= args.gateway_workers <= 64:
        raise SystemExit("--gateway-workers must be within 1..64")
    return Options(
        duration_s=duration,
        warmup_s=warmup,
        threads=args.threads,
        connections=args.connections,
        rate=args.rate,
        open_connections=args.open_connections,
        timeout_s=args.timeout,
        long_prompt_bytes=args.long_prompt_bytes,
        skip_redis=args.skip_redis,
        wait_quiet_s=args.wait_quiet,
        gateway_workers=args.gateway_workers,
        out=args.out,
        check=args.check,
    )
