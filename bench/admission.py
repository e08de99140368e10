"""Tiers, lanes and admission under overload, and what auth + limits + lanes cost.

Part 1 (`load`): a simulated fleet of a short pool and a long pool. Interactive short chats
(tier rank 0, short lane spilling to the long pool) and batch long documents (rank 2, long
lane). Each class's capacity on its own pool is measured closed-loop first; then both are
offered open-loop at about 1.3x the fleet's capacity (interactive at 60% of the short pool,
batch at 200% of the long pool). Reported: interactive TTFT p99 against an idle fleet,
interactive requests refused while batch ones waited, batch throughput against the long
pool's capacity left over by interactive spill.

Part 2 (`overhead`): one zero-latency simulated backend behind a gateway on a Redis index,
with and without auth + tenant limits + lanes, offered the same open-loop rate; the added
latency p50 (gateway with them minus without).

Bounded: every phase has a fixed duration; children are stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.harness import MODEL, FleetSettings
from bench.overhead_cpu import snapshot
from bench.procs import LOOPBACK, ChildProcess, free_port_range, wait_until
from gateway.admission.keys import hash_key

REPO = Path(__file__).resolve().parent.parent
KEY = "bench-key"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KEY_SHA = hash_key(KEY)
SHORT_CHARS = 800  # ~200 tokens
LONG_CHARS = 24_000  # ~6000 tokens


@dataclass
class Sample:
    """One request's result."""

    kind: str
    status: int
    ttft_s: float | None
    total_s: float
    started: float


@dataclass
class Phase:
    """Samples of one phase and its wall time."""

    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0

    def of(self, kind: str) -> list[Sample]:
        """Samples of one request kind."""
        return [s for s in self.samples if s.kind == kind]


def p(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def body(kind: str, i: int) -> dict[str, Any]:
    """A chat request: interactive short, batch long (distinct text: no cache hits);
    `overhead` a short one that names no tier."""
    chars = LONG_CHARS if kind == "batch" else SHORT_CHARS
    text = f"{kind} {i} " + "lorem ipsum dolor sit amet " * (chars // 27)
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 32 if kind == "batch" else 16,
        "stream": True,
    }
    if kind != "overhead":
        request["service_tier"] = "priority" if kind == "interactive" else "flex"
    return request


async def one(
    client: httpx.AsyncClient, url: str, kind: str, i: int, phase: Phase, tag: str | None = None
) -> None:
    """Send one streaming request and record its status and TTFT (under `tag`, else `kind`)."""
    started = time.perf_counter()
    ttft = None
    status = 0
    try:
        async with client.stream(
            "POST", url + "/v1/chat/completions", json=body(kind, i), timeout=120
        ) as response:
            status = response.status_code
            async for chunk in response.aiter_bytes():
                if ttft is None and chunk:
                    ttft = time.perf_counter() - started
    except httpx.HTTPError:
        status = -1
    phase.samples.append(Sample(tag or kind, status, ttft, time.perf_counter() - started, started))


async def closed_loop(url: str, kind: str, workers: int, seconds: float) -> float:
    """Completed requests per second with `workers` back to back."""
    phase = Phase()
    deadline = time.perf_counter() + seconds
    headers = {"authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(headers=headers, limits=httpx.Limits(max_connections=256)) as c:

        async def worker(w: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                await one(c, url, kind, w * 100_000 + i, phase)
                i += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(workers)))
        took = time.perf_counter() - began
    return sum(1 for s in phase.samples if s.status == 200) / took


async def open_loop(url: str, rates: dict[str, float], seconds: float, seed: int) -> Phase:
    """Poisson arrivals per kind for `seconds`; waits for every request to finish."""
    phase = Phase()
    rng = random.Random(seed)
    headers = {"authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(headers=headers, limits=httpx.Limits(max_connections=1024)) as c:
        tasks: list[asyncio.Task[None]] = []

        async def arrivals(kind: str, rate: float) -> None:
            i = 0
            next_at = time.perf_counter()
            end = next_at + seconds
            while True:
                next_at += rng.expovariate(rate)
                if next_at >= end:
                    return
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                tasks.append(asyncio.create_task(one(c, url, kind, i, phase)))
                i += 1

        began = time.perf_counter()
        await asyncio.gather(*(arrivals(k, r) for k, r in rates.items() if r > 0))
        await asyncio.gather(*tasks)
        phase.seconds = time.perf_counter() - began
    return phase


def start_fleet(workdir: Path, backends: int, fleet: FleetSettings) -> tuple[ChildProcess, int]:
    """The simulated fleet as one child process."""
    base = free_port_range(backends)
    sim = ChildProcess(
        "sim",
        [sys.executable, "-m", "gateway", "sim", *fleet.sim_args(base)],
        workdir / "sim.log",
        REPO,
    )
    urls = [f"http://{LOOPBACK}:{base + i}" for i in range(backends)]
    with httpx.Client(timeout=2.0) as client:
        wait_until(
            lambda: all(client.get(u + "/sim/stats").status_code == 200 for u in urls), sim, 30
        )
    return sim, base


def start_gateway(workdir: Path, name: str, config: dict[str, Any]) -> tuple[ChildProcess, str]:
    """A gateway process on `config` (its port chosen here)."""
    port = free_port_range(1)
    config = {**config, "server": {"host": LOOPBACK, "port": port, "log_level": "warning"}}
    path = workdir / f"{name}.yaml"
    path.write_bytes(orjson.dumps(config))
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(path)]
    gateway = ChildProcess(name, argv, workdir / f"{name}.log", REPO)
    url = f"http://{LOOPBACK}:{port}"
    with httpx.Client(timeout=2.0) as client:
        wait_until(lambda: client.get(url + "/readyz").status_code == 200, gateway, 30)
    return gateway, url


def tiered_config(base: int, per_pool: int, concurrency: int) -> dict[str, Any]:
    """Two pools, two lanes, interactive and batch tiers, one key allowed both."""
    backends = [
        {
            "id": f"sim-{i}",
            "url": f"http://{LOOPBACK}:{base + i}",
            "models": [MODEL],
            "pool": "short" if i < per_pool else "long",
            "max_concurrency": concurrency,
        }
        for i in range(2 * per_pool)
    ]
    return {
        "backends": backends,
        "auth": {
            "enabled": True,
            "keys": [
                {"sha256": KEY_SHA, "tenant": "bench", "tier": "batch", "tiers": ["interactive"]}
            ],
        },
        "admission": {
            "lanes": [
                {"name": "short", "up_to_tokens": 2048, "pools": ["short"], "spill": ["long"]},
                {"name": "long", "pools": ["long"]},
            ],
            "tiers": {
                "interactive": {"rank": 0, "max_queue_wait_s": 10},
                "batch": {"rank": 2, "max_queue_wait_s": 120, "reject_status": 429},
            },
            "default_tier": "batch",
            "service_tiers": {"priority": "interactive", "flex": "batch", "default": "batch"},
            "aging_s": 30,
        },
    }


async def run_load(
    workdir: Path, seconds: float, per_pool: int, concurrency: int
) -> dict[str, Any]:
    """Part 1."""
    fleet = FleetSettings(
        backends=2 * per_pool, block_size=16, cache_blocks=200_000, prefill_tps=20_000,
        decode_ms=10.0, time_scale=1.0,
    )  # fmt: skip
    sim, base = start_fleet(workdir, 2 * per_pool, fleet)
    try:
        gateway, url = start_gateway(workdir, "tiered", tiered_config(base, per_pool, concurrency))
        try:
            slots = per_pool * concurrency
            idle = await open_loop(url, {"interactive": 2.0}, seconds / 2, seed=1)
            x_short = await closed_loop(url, "interactive", slots, seconds / 2)
            x_long = await closed_loop(url, "batch", slots, seconds / 2)
            rates = {"interactive": 0.6 * x_short, "batch": 2.0 * x_long}
            loaded = await open_loop(url, rates, seconds, seed=2)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(url + "/metrics", timeout=5)).text
        finally:
            gateway.stop()
    finally:
        sim.stop()
    return summarize_load(idle, loaded, x_short, x_long, rates, metrics, seconds)


def summarize_load(
    idle: Phase,
    loaded: Phase,
    x_short: float,
    x_long: float,
    rates: dict[str, float],
    metrics: str,
    seconds: float,
) -> dict[str, Any]:
    """The part-1 figures and checks."""
    ttft_idle = p([s.ttft_s for s in idle.of("interactive") if s.ttft_s is not None], 0.99)
    inter = loaded.of("interactive")
    ttft_load = p([s.ttft_s for s in inter if s.ttft_s is not None and s.status == 200], 0.99)
    refused = sum(1 for s in inter if s.status != 200)
    batch = loaded.of("batch")
    batch_ok = [s for s in batch if s.status == 200]
    # Batch throughput over the arrival window (requests that finished in it).
    in_window = [s for s in batch_ok if s.started + s.total_s - batch[0].started <= seconds]
    batch_rate = len(in_window) / seconds if batch else 0.0
    waited = _counter(metrics, 'gateway_admission_queue_wait_seconds_count{tier="batch"}')
    ratio = ttft_load / ttft_idle if ttft_load and ttft_idle else None
    offered = (rates["interactive"] / x_short + rates["batch"] / x_long) / 2
    return {
        "capacity_rps": {"interactive_short_pool": x_short, "batch_long_pool": x_long},
        "offered_rps": rates,
        "offered_x_capacity": offered,
        "interactive": {
            "sent": len(inter),
            "refused": refused,
            "ttft_p99_idle_s": ttft_idle,
            "ttft_p99_loaded_s": ttft_load,
            "ttft_p99_ratio": ratio,
        },
        "batch": {
            "sent": len(batch),
            "ok": len(batch_ok),
            "refused": len(batch) - len(batch_ok),
            "queued": waited,
            "throughput_rps": batch_rate,
            "share_of_long_pool_capacity": batch_rate / x_long if x_long else None,
        },
        "checks": {
            "interactive_ttft_p99_within_2x_idle": ratio is not None and ratio <= 2.0,
            "no_interactive_refused_while_batch_waits": refused == 0,
            "batch_at_least_80pct_of_leftover": x_long > 0 and batch_rate >= 0.8 * x_long,
        },
    }


def _counter(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return None


async def paired_open_loop(
    urls: dict[str, str], rate: float, seconds: float, seed: int
) -> dict[str, list[float]]:
    """One Poisson arrival stream at `rate`, each arrival sent to one of `urls` at random, so
    both gateways see the same moments of machine noise; latencies (s) of 200s per name."""
    phase = Phase()
    rng = random.Random(seed)
    names = sorted(urls)
    headers = {"authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(headers=headers, limits=httpx.Limits(max_connections=1024)) as c:
        tasks: list[asyncio.Task[None]] = []
        next_at = time.perf_counter()
        end = next_at + seconds
        i = 0
        while True:
            next_at += rng.expovariate(rate)
            if next_at >= end:
                break
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            name = rng.choice(names)
            tasks.append(asyncio.create_task(one(c, urls[name], "overhead", i, phase, name)))
            i += 1
        await asyncio.gather(*tasks)
    return {n: [s.total_s for s in phase.of(n) if s.status == 200] for n in names}


async def run_overhead(
    workdir: Path, seconds: float, rate: float, rounds: int = 5, limits: bool = True
) -> dict[str, Any]:
    """Part 2: a gateway with and one without the admission stage, side by side on one
    simulator and one Redis, offered one open-loop stream split between them at random."""
    redis_port = free_port_range(1)
    redis = ChildProcess(
        "redis",
        ["redis-server", "--port", str(redis_port), "--bind", LOOPBACK, "--save", "",
         "--appendonly", "no"],
        workdir / "redis.log",
        REPO,
    )  # fmt: skip
    fleet = FleetSettings(
        backends=1, block_size=16, cache_blocks=100_000, prefill_tps=1e9, decode_ms=0.0,
        time_scale=0.0,
    )  # fmt: skip
    redis_url = f"redis://{LOOPBACK}:{redis_port}/0"
    gateways: list[ChildProcess] = []
    try:
        sim, base = start_fleet(workdir, 1, fleet)
        try:
            # The same two backend entries (one simulator) on both sides: only the stage differs.
            backends = [
                {"id": name, "url": f"http://{LOOPBACK}:{base}", "models": [MODEL]}
                for name in ("sim-0", "sim-0b")
            ]
            plain = {
                "backends": backends,
                "index": {"kind": "redis", "redis_url": redis_url, "key_prefix": "plain:"},
            }
            staged = tiered_config(base, 1, 256)
            staged["backends"] = [
                {**backends[0], "pool": "short"},
                {**backends[1], "pool": "long"},
            ]
            staged["index"] = {"kind": "redis", "redis_url": redis_url, "key_prefix": "staged:"}
            staged["admission"]["tiers"]["batch"]["limits"] = {} if not limits else {
                "requests_per_min": 10_000_000, "tokens_per_min": 1_000_000_000,
                "max_concurrent": 100_000,
            }  # fmt: skip
            urls = {}
            for name, config in (("without", plain), ("with", staged)):
                gateway, urls[name] = start_gateway(workdir, f"overhead-{name}", config)
                gateways.append(gateway)
            await paired_open_loop(urls, rate, 2.0, seed=3)  # warm-up
            per_round = []
            every: dict[str, list[float]] = {name: [] for name in urls}
            pids = dict(zip(urls, (g.pid for g in gateways), strict=True))
            ticks_before = {name: _ticks(pid) for name, pid in pids.items()}
            for r in range(rounds):
                got = await paired_open_loop(urls, rate, seconds / rounds, seed=4 + r)
                for name, values in got.items():
                    every[name].extend(values)
                if got["with"] and got["without"]:
                    added = statistics.median(got["with"]) - statistics.median(got["without"])
                    per_round.append(1000 * added)
            cpu_s = {n: (_ticks(pid) - ticks_before[n]) / CLOCK_TICKS for n, pid in pids.items()}
        finally:
            for gateway in gateways:
                gateway.stop()
            sim.stop()
    finally:
        redis.stop()
    results: dict[str, Any] = {
        name: {
            "ok": len(values),
            "p50_ms": 1000 * statistics.median(values) if values else None,
            "p99_ms": 1000 * (p(values, 0.99) or 0.0),
            "cpu_us_per_request": 1e6 * cpu_s[name] / len(values) if values else None,
        }
        for name, values in every.items()
    }
    with_p50, without_p50 = results["with"]["p50_ms"], results["without"]["p50_ms"]
    added = with_p50 - without_p50 if with_p50 is not None and without_p50 is not None else None
    results["added_p50_ms"] = added
    results["added_p50_ms_per_round"] = per_round
    results["checks"] = {"added_p50_at_most_0.3ms": added is not None and added <= 0.3}
    return results


def _ticks(pid: int) -> int:
    """User + system CPU ticks of one process so far."""
    found = snapshot().get(pid)
    return found.ticks if found is not None else 0


def table(doc: dict[str, Any]) -> str:
    """The printed summary."""
    lines = []
    load = doc.get("load")
    if load:
        inter, batch = load["interactive"], load["batch"]
        lines += [
            f"offered {load['offered_x_capacity']:.2f}x capacity "
            f"(interactive {load['offered_rps']['interactive']:.1f}/s, "
            f"batch {load['offered_rps']['batch']:.1f}/s)",
            f"interactive TTFT p99 idle {_ms(inter['ttft_p99_idle_s'])} "
            f"loaded {_ms(inter['ttft_p99_loaded_s'])} ratio {_f(inter['ttft_p99_ratio'])}",
            f"interactive refused {inter['refused']}/{inter['sent']}; batch ok "
            f"{batch['ok']}/{batch['sent']}, queued {batch['queued']}",
            f"batch throughput {batch['throughput_rps']:.2f}/s = "
            f"{_f(batch['share_of_long_pool_capacity'])} of the long pool's "
            f"{load['capacity_rps']['batch_long_pool']:.2f}/s",
        ]
    over = doc.get("overhead")
    if over:
        lines.append(
            f"overhead p50 without {_f(over['without']['p50_ms'])} ms, with "
            f"{_f(over['with']['p50_ms'])} ms: added {_f(over['added_p50_ms'])} ms "
            f"(per round {', '.join(f'{x:+.3f}' for x in over['added_p50_ms_per_round'])}); "
            f"gateway CPU per request without {_f(over['without']['cpu_us_per_request'])} us, "
            f"with {_f(over['with']['cpu_us_per_request'])} us"
        )
    for part in ("load", "overhead"):
        for check, ok in (doc.get(part) or {}).get("checks", {}).items():
            lines.append(f"  [{'pass' if ok else 'FAIL'}] {check}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f} ms"


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the parts asked for; write JSON; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="load,overhead")
    parser.add_argument("--seconds", type=float, default=30.0, help="loaded phase length")
    parser.add_argument("--per-pool", type=int, default=2, help="backends per pool")
    parser.add_argument("--concurrency", type=int, default=4, help="max_concurrency per backend")
    parser.add_argument("--overhead-rate", type=float, default=100.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/admission.json"))
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    doc: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="pgw-admission-") as tmp:
        workdir = Path(tmp)
        if "load" in parts:
            doc["load"] = asyncio.run(
                run_load(workdir, args.seconds, args.per_pool, args.concurrency)
            )
        if "overhead" in parts:
            doc["overhead"] = asyncio.run(run_overhead(workdir, args.seconds, args.overhead_rate))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
