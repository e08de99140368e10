"""Microbenchmark of prefix hashing and the cache-location index (memory and Redis).

Usage: python -m bench.index_micro REDIS_URL [--out bench/results/index_micro.json]

Client side: p50/p99 of hashing a 512-block chat prompt, and of hashing + lookup across 8
backends for the memory and the Redis index. Server side: Redis µs per lookup and per record
from ``INFO commandstats`` deltas (exact when nothing else runs scripts on that Redis), and
Redis memory per million recorded blocks, extrapolated from ``INFO memory`` around a bounded
number of records. Only keys under a fresh random prefix are written, and they are deleted at
the end. Bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import string
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import redis
from pydantic import AnyHttpUrl

from gateway.api.request import InferenceRequest
from gateway.fleet.registry import Backend
from gateway.metrics import GatewayMetrics
from gateway.placement import Placer
from gateway.prefix.hashing import PrefixKey, prefix_hashes
from gateway.prefix.memory import MemoryPrefixIndex
from gateway.prefix.redis import RedisPrefixIndex
from gateway.routing.factory import build_router
from gateway.routing.types import RouteRequest
from gateway.settings import BackendSettings, HashingSettings, RoutingSettings
from gateway.tasks import BackgroundTasks

MODEL = "bench-model"
BLOCKS = 512
BACKENDS = [f"backend-{i}" for i in range(8)]
# Leading blocks of the probe chain each backend holds: every binary search takes its own path.
HELD = [512, 448, 384, 300, 200, 100, 17, 0]


class OffsetClock:
    """Wall clock plus a bench-controlled offset (to age entries without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def chat_body(rng: random.Random, approx_bytes: int) -> dict[str, Any]:
    def text(n: int) -> str:
        return "".join(rng.choices(string.ascii_letters + "      ", k=n))

    messages = [{"role": "system", "content": text(8000)}]
    while sum(len(m["content"]) for m in messages) < approx_bytes:
        role = "user" if len(messages) % 2 else "assistant"
        messages.append({"role": role, "content": text(3000)})
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    return {"model": MODEL, "tools": tools, "messages": messages}


def key_of(body: dict[str, Any]) -> PrefixKey:
    return prefix_hashes(body, "chat", MODEL, None, 256, BLOCKS)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)] * 1e6


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_us": round(pct(samples, 0.50), 1),
        "p99_us": round(pct(samples, 0.99), 1),
        "mean_us": round(statistics.fmean(samples) * 1e6, 1),
        "n": len(samples),
    }


async def timed(n: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


def bench_hashing(body: dict[str, Any], n: int) -> dict[str, float]:
    key_of(body)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        key_of(body)
        samples.append(time.perf_counter() - t0)
    return summary(samples)


async def fill(
    index: MemoryPrefixIndex | RedisPrefixIndex, probe: list[int], rng: random.Random
) -> None:
    for backend, held in zip(BACKENDS, HELD, strict=True):
        if held:
            await index.record(MODEL, backend, probe[:held])
        for _ in range(4):  # other traffic on every backend
            other = key_of(chat_body(rng, 30_000)).hashes
            await index.record(MODEL, backend, other)


async def bench_memory(body: dict[str, Any], n: int) -> dict[str, Any]:
    index = MemoryPrefixIndex()
    index.configure_backends(dict.fromkeys(BACKENDS, 200_000))
    probe = key_of(body).hashes
    await fill(index, probe, random.Random(2))
    found = await index.lookup(MODEL, probe)
    assert found == {b: h for b, h in zip(BACKENDS, HELD, strict=True) if h}, found
    lookup = summary(await timed(n, lambda: index.lookup(MODEL, probe)))
    e2e = summary(await timed(n, lambda: index.lookup(MODEL, key_of(body).hashes)))
    return {"lookup": lookup, "hash_plus_lookup": e2e}


def evalsha_stats(client: redis.Redis) -> tuple[int, int]:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


async def server_us(
    client: redis.Redis, calls: Sequence[Callable[[], Awaitable[object]]]
) -> dict[str, float]:
    c0, u0 = evalsha_stats(client)
    for call in calls:
        await call()
    c1, u1 = evalsha_stats(client)
    return {"server_us_per_call": round((u1 - u0) / max(c1 - c0, 1), 1), "calls": c1 - c0}


async def bench_redis_calls(url: str, prefix: str, body: dict[str, Any], n: int) -> dict[str, Any]:
    clock = OffsetClock()
    index = RedisPrefixIndex(url, key_prefix=prefix, clock=clock, lookup_timeout_s=1.0)
    index.configure_backends(dict.fromkeys(BACKENDS, 200_000))
    client = redis.Redis.from_url(url)
    rng = random.Random(3)
    try:
        probe = key_of(body).hashes
        await fill(index, probe, rng)
        found = await index.lookup(MODEL, probe)
        assert found == {b: h for b, h in zip(BACKENDS, HELD, strict=True) if h}, found
        out: dict[str, Any] = {
            "lookup": summary(await timed(n, lambda: index.lookup(MODEL, probe))),
            "hash_plus_lookup": summary(
                await timed(n, lambda: index.lookup(MODEL, key_of(body).hashes))
            ),
            **await bench_decisions(index, body, probe, n),
        }
        lookups = [lambda: index.lookup(MODEL, probe)] * 500
        out["server_lookup_8_backends"] = await server_us(client, lookups)
        single = key_of(chat_body(rng, 140_000)).hashes
        await index.record(MODEL, BACKENDS[0], single)
        lone = [lambda: index.lookup(MODEL, single)] * 500
        out["server_lookup_one_holder"] = await server_us(client, lone)
        fresh_chains = [key_of(chat_body(rng, 140_000)).hashes for _ in range(100)]
        new = [partial(index.record, MODEL, rng.choice(BACKENDS), c) for c in fresh_chains]
        out["server_record_new_512"] = await server_us(client, new)
        out["server_record_recent_512"] = await server_us(
            client, [lambda: index.record(MODEL, BACKENDS[0], single)] * 200
        )
        stale: list[Callable[[], Awaitable[object]]] = []
        for _ in range(100):

            async def rewrite() -> None:
                clock.offset += 5.0  # older than fresh_s: every block is rewritten
                await index.record(MODEL, BACKENDS[0], single)

            stale.append(rewrite)
        out["server_record_rewrite_512"] = await server_us(client, stale)
        return out
    finally:
        await index.close()
        client.close()


async def bench_decisions(
    index: RedisPrefixIndex, body: dict[str, Any], probe: list[int], n: int
) -> dict[str, Any]:
    """The gateway's own routing step against Redis: lookup + decision, and hash + both."""
    backends = [
        Backend.from_settings(
            BackendSettings(id=b, url=AnyHttpUrl(f"http://127.0.0.1:{9000 + i}"), models=[MODEL])
        )
        for i, b in enumerate(BACKENDS)
    ]
    router = build_router(RoutingSettings(policy="profile"), random.Random(4))
    placer = Placer(HashingSettings(), index, router, GatewayMetrics(), BackgroundTasks())
    raw = orjson.dumps({"model": MODEL, **body})
    request = InferenceRequest("chat", raw, {"model": MODEL, **body}, MODEL, False, b"bench")

    async def lookup_and_decide() -> None:
        matches = await index.lookup(MODEL, probe)
        route = RouteRequest(MODEL, 512 * 64.0, len(probe), 64.0, matches, time.monotonic())
        router.decide(route, backends)

    decided = await placer.place(request, backends)
    assert decided.decision.ranked[0].id == BACKENDS[0], decided.decision.explain()
    return {
        "lookup_plus_decision": summary(await timed(n, lookup_and_decide)),
        "hash_lookup_decision": summary(await timed(n, lambda: placer.place(request, backends))),
    }


async def bench_redis_memory(url: str, prefix: str, blocks: int) -> dict[str, Any]:
    index = RedisPrefixIndex(url, key_prefix=prefix, write_timeout_s=5.0)
    index.configure_backends(dict.fromkeys(BACKENDS, 10_000_000))
    client = redis.Redis.from_url(url)
    rng = random.Random(4)
    try:
        before = int(client.info("memory")["used_memory"])
        recorded = 0
        while recorded < blocks:
            chain = [rng.getrandbits(64) for _ in range(BLOCKS)]
            await index.record(MODEL, rng.choice(BACKENDS), chain)
            recorded += len(chain)
        after = int(client.info("memory")["used_memory"])
        per_block = (after - before) / recorded
        return {
            "blocks_recorded": recorded,
            "bytes_per_block": round(per_block, 1),
            "mb_per_million_blocks": round(per_block * 1e6 / 2**20, 1),
            "record_errors": index.counters.record_errors,
        }
    finally:
        await index.close()
        client.close()


def cleanup(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i : i + 1000])
        return len(keys)
    finally:
        client.close()


async def run(url: str, lookups: int, memory_blocks: int) -> dict[str, Any]:
    gc.collect()
    gc.freeze()  # setup objects out of the collector's way: p99 measures the calls, not GC scans
    body = chat_body(random.Random(1), 150_000)
    key = key_of(body)
    assert len(key.hashes) == BLOCKS, len(key.hashes)
    prefix = f"bench:{uuid.uuid4().hex[:10]}:"
    result: dict[str, Any] = {
        "blocks": BLOCKS,
        "backends": len(BACKENDS),
        "held_blocks": HELD,
        "rendered_bytes": key.rendered_bytes,
        "python": sys.version.split()[0],
        "redis_version": redis.Redis.from_url(url).info("server")["redis_version"],
        "hashing": bench_hashing(body, lookups),
        "memory_index": await bench_memory(body, lookups),
    }
    try:
        result["redis_index"] = await bench_redis_calls(url, prefix + "c:", body, lookups)
        result["redis_memory"] = await bench_redis_memory(url, prefix + "m:", memory_blocks)
    finally:
        cleanup(url, prefix)
    r = result["redis_index"]
    result["server_us_lookup_plus_record"] = {
        "lookup_8_backends + record_rewrite_512": round(
            r["server_lookup_8_backends"]["server_us_per_call"]
            + r["server_record_rewrite_512"]["server_us_per_call"],
            1,
        ),
        "lookup_8_backends + record_new_512": round(
            r["server_lookup_8_backends"]["server_us_per_call"]
            + r["server_record_new_512"]["server_us_per_call"],
            1,
        ),
    }
    return result


def table(result: dict[str, Any]) -> str:
    r, m = result["redis_index"], result["memory_index"]
    rows = [
        ("hash 512-block chat prompt", result["hashing"]),
        ("memory lookup (8 backends)", m["lookup"]),
        ("memory hash + lookup", m["hash_plus_lookup"]),
        ("redis lookup, client side", r["lookup"]),
        ("redis hash + lookup, client side", r["hash_plus_lookup"]),
        ("redis lookup + decision (gateway side)", r["lookup_plus_decision"]),
        ("redis hash + lookup + decision (place)", r["hash_lookup_decision"]),
    ]
    lines = [f"{'client side':40} {'p50 µs':>9} {'p99 µs':>9}"]
    lines += [f"{name:40} {s['p50_us']:>9} {s['p99_us']:>9}" for name, s in rows]
    lines.append(f"{'redis server time':40} {'µs/call':>9}")
    for name in (
        "server_lookup_8_backends",
        "server_lookup_one_holder",
        "server_record_new_512",
        "server_record_rewrite_512",
        "server_record_recent_512",
    ):
        lines.append(f"{name:40} {r[name]['server_us_per_call']:>9}")
    for name, value in result["server_us_lookup_plus_record"].items():
        lines.append(f"{name:40} {value:>9}")
    mem = result["redis_memory"]
    lines.append(f"{'redis bytes per recorded block':40} {mem['bytes_per_block']:>9}")
    lines.append(f"{'redis MB per million blocks':40} {mem['mb_per_million_blocks']:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("redis_url", help="Redis to measure (only a random key prefix is used)")
    parser.add_argument("--out", default="bench/results/index_micro.json")
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--memory-blocks", type=int, default=100_000)
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    result = runner(
        run(args.redis_url, min(args.lookups, 20_000), min(args.memory_blocks, 1_000_000))
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
