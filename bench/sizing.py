"""Deployment sizing: gateway CPU per request, Redis time per request, Redis memory per block.

One zero-latency simulated backend, one Redis, one gateway (one worker, Redis index); wrk
loads it closed-loop for each request kind, in rounds. Per request: the gateway process's CPU
time (/proc), Redis's own command time (INFO commandstats usec, Lua scripts' inner commands
included) and commands, and the redis-server process's CPU. Then a fresh key prefix is filled
with a million blocks through the gateway's RedisPrefixIndex and INFO memory read before and
after. From these: gateway cores and replicas for a given request rate.

    flock /tmp/pgw-heavy.lock .venv/bin/python bench/sizing.py [--rounds 3 --duration 4]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.index_micro import bench_redis_memory, cleanup  # noqa: E402
from bench.overhead_cpu import tree_cpu_seconds  # noqa: E402
from bench.overhead_stack import Stack  # noqa: E402
from bench.overhead_wrk import WrkLoad, find_wrk, run_wrk  # noqa: E402
from bench.runutil import run_async, write_json  # noqa: E402

MODEL = "sim-llama-8b"
# (name, stream, max_tokens, system prompt bytes): a chat turn, a stream, a long shared prompt.
KINDS = (
    ("non-stream, 8 tokens", False, 8, 0),
    ("64-chunk stream", True, 64, 0),
    ("stream, 8 KB system prompt", True, 64, 8000),
)
# A replica is sized to run at this share of its cores (headroom for bursts and GC).
TARGET_UTILISATION = 0.6
RATES = (100, 500, 1000, 5000)


def redis_totals(url: str) -> tuple[int, int]:
    """Commands Redis has run (EVALSHA's inner commands counted too) and their microseconds."""
    with redis.Redis.from_url(url, socket_timeout=2.0) as client:
        stats = client.info("commandstats")
    calls = usec = 0
    for name, value in stats.items():
        if isinstance(value, dict) and name != "cmdstat_info":
            calls += int(value.get("calls", 0))
            usec += int(value.get("usec", 0))
    return calls, usec


def one_round(
    wrk: str, url: str, pids: dict[str, int], redis_url: str, load: WrkLoad, log: Path
) -> dict[str, float]:
    """One wrk run: req/s, gateway and redis-server CPU per request, Redis work per request."""
    cpu0 = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    calls0, usec0 = redis_totals(redis_url)
    result = run_wrk(wrk, f"{url}/v1/chat/completions", load, log)
    calls1, usec1 = redis_totals(redis_url)
    cpu = {name: tree_cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    if result.error_total or not result.requests:
        raise SystemExit(f"wrk saw errors or no requests: {result.errors}")
    n = result.requests
    return {
        "rps": result.rps,
        "gateway_cpu_us": cpu["gateway"] / n * 1e6,
        "redis_process_cpu_us": cpu["redis"] / n * 1e6,
        "redis_commands": (calls1 - calls0) / n,
        "redis_command_us": (usec1 - usec0) / n,
    }


def replicas_for(rate: float, cpu_us: float, cores: float) -> int:
    """Gateway replicas of `cores` cores each for `rate` requests/s at the target utilisation."""
    return max(2, math.ceil(rate * cpu_us / 1e6 / (cores * TARGET_UTILISATION)))


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every round's figures, then the Redis memory fill."""
    wrk = find_wrk()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in KINDS}
    with Stack(REPO, work, MODEL) as stack:
        redis_url, redis_pid = stack.start_redis()
        backend_url, _ = stack.start_backend()
        url, gateway_pid = stack.start_gateway("gateway", backend_url, redis_url, 1)
        pids = {"gateway": gateway_pid, "redis": redis_pid}
        for round_no in range(args.rounds):
            for name, stream, max_tokens, system_bytes in KINDS:
                load = WrkLoad(
                    threads=1,
                    connections=args.connections,
                    duration_s=args.duration,
                    timeout_s=10,
                    stream=stream,
                    max_tokens=max_tokens,
                    model=MODEL,
                    system_bytes=system_bytes,
                )
                log = work / f"wrk-{round_no}-{len(rounds[name])}-{int(stream)}.log"
                figures = one_round(wrk, url, pids, redis_url, load, log)
                rounds[name].append(figures)
                print(
                    f"round {round_no + 1} {name:28s} {figures['rps']:7.0f} req/s "
                    f"gw {figures['gateway_cpu_us']:5.0f} us CPU, redis "
                    f"{figures['redis_commands']:.1f} cmds {figures['redis_command_us']:.1f} us",
                    flush=True,
                )
        prefix = f"sizing-{uuid.uuid4().hex[:8]}:"
        memory = run_async(bench_redis_memory(redis_url, prefix, args.blocks))
        with redis.Redis.from_url(redis_url) as client:
            memory["redis_version"] = client.info("server")["redis_version"]
        cleanup(redis_url, prefix)
    return {"rounds": rounds, "memory": memory}


def summarise(data: dict[str, Any], cores: float) -> dict[str, Any]:
    """Medians per request kind and the replicas each rate needs."""
    kinds: dict[str, Any] = {}
    for name, runs in data["rounds"].items():
        med = {key: round(statistics.median(r[key] for r in runs), 1) for key in runs[0]}
        med["replicas"] = {
            str(rate): replicas_for(rate, med["gateway_cpu_us"], cores) for rate in RATES
        }
        kinds[name] = med
    return kinds


def table(summary: dict[str, Any], memory: dict[str, Any], cores: float) -> str:
    """The figures as Markdown tables."""
    head = " | ".join(f"{rate} req/s" for rate in RATES)
    lines = [
        "| request | gateway CPU per request | req/s per core | Redis commands, time per "
        f"request | redis-server CPU per request | replicas of {cores:g} core for {head} |",
        "|---|---|---|---|---|" + "---|" * len(RATES),
    ]
    for name, med in summary.items():
        per_core = 1e6 / med["gateway_cpu_us"]
        replicas = " | ".join(str(med["replicas"][str(rate)]) for rate in RATES)
        lines.append(
            f"| {name} | {med['gateway_cpu_us']:.0f} us | {per_core:,.0f} | "
            f"{med['redis_commands']:.1f}, {med['redis_command_us']:.1f} us | "
            f"{med['redis_process_cpu_us']:.0f} us | {replicas} |"
        )
    lines.append("")
    lines.append(
        f"Redis {memory['redis_version']}: {memory['blocks_recorded']:,} blocks recorded, "
        f"{memory['bytes_per_block']} bytes per block, {memory['mb_per_million_blocks']} MiB "
        f"per million blocks (record errors: {memory['record_errors']})."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the sizing measurement and write bench/results/sizing-<time>.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=1_000_000)
    parser.add_argument("--cores", type=float, default=1.0, help="cores per replica (sizing)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pgw-sizing-") as tmp:
        data = measure(args, Path(tmp))
    summary = summarise(data, args.cores)
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown",
    )  # fmt: skip
    result = {
        "machine": {"cores": os.cpu_count(), "cpu": cpu},
        "target_utilisation": TARGET_UTILISATION,
        "cores_per_replica": args.cores,
        "summary": summary,
        **data,
    }
    out = args.out or REPO / "bench" / "results" / f"sizing-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(out, result)
    print(table(summary, data["memory"], args.cores))
    print(f"\n{out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
