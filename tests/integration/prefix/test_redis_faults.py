"""The Redis index when Redis dies, hangs (SIGSTOP) and comes back: degrade, then recover alone."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.prefix.breaker import BreakerState
from gateway.prefix.hashing import chain_hashes
from gateway.prefix.index import IndexState
from gateway.prefix.redis import RedisPrefixIndex
from tests.support.redis_server import RedisServer

M = "model"
HANG_GUARD_S = 10.0  # only catches a hang; no assertion is about timing


def chain(seed: int, n: int = 64) -> list[int]:
    return chain_hashes(random.Random(seed).randbytes(n), 0, 1, 10_000)


@pytest.fixture
async def index(redis_server: RedisServer) -> AsyncIterator[tuple[RedisPrefixIndex, list[bool]]]:
    changes: list[bool] = []
    idx = RedisPrefixIndex(
        redis_server.url,
        key_prefix="fault:",
        lookup_timeout_s=0.25,  # generous: a loaded CI machine must not trip it by itself
        write_timeout_s=1.0,
        breaker_failures=3,
        breaker_cooldown_s=0.1,
        sync_interval_s=0.05,
        on_degraded_change=changes.append,
    )
    idx.configure_backends({"a": 10_000, "b": 10_000})
    yield idx, changes
    await idx.close()


async def lookup(idx: RedisPrefixIndex, hashes: list[int]) -> dict[str, int]:
    return await asyncio.wait_for(idx.lookup(M, hashes), HANG_GUARD_S)


async def until_healthy(idx: RedisPrefixIndex, probe: list[int], rounds: int = 400) -> None:
    """Keep traffic flowing (lookups, and the writes the sync task makes) until both breakers
    close again (bounded)."""
    for _ in range(rounds):
        await asyncio.wait_for(idx.sync_shared_state(), HANG_GUARD_S)
        await lookup(idx, probe)
        if idx.healthy:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"index did not recover: {idx.breaker_state}, {idx.counters}")


async def until_degraded(idx: RedisPrefixIndex, probe: list[int], rounds: int = 400) -> None:
    for _ in range(rounds):
        assert await lookup(idx, probe) in ({}, {"a": len(probe)})
        if not idx.healthy:
            return
    raise AssertionError("breaker never opened")


async def test_redis_stop_degrades_then_restart_recovers(
    redis_server: RedisServer, index: tuple[RedisPrefixIndex, list[bool]]
) -> None:
    idx, changes = index
    c = chain(1)
    await idx.record(M, "a", c)
    assert await lookup(idx, c) == {"a": len(c)}

    redis_server.stop()
    await until_degraded(idx, c)
    assert idx.state is IndexState.DEGRADED
    assert changes == [True]
    assert idx.counters.lookup_errors >= 3
    assert await lookup(idx, c) == {}
    skipped = idx.counters.lookups_skipped
    assert await lookup(idx, c) == {}
    assert idx.counters.lookups_skipped > skipped  # short-circuited, not sent
    for _ in range(3):  # writes have a breaker of their own: it opens on their failures
        await idx.record(M, "a", c)
    assert idx.counters.record_errors >= 3
    dropped = idx.counters.records_dropped
    await idx.record(M, "a", c)
    assert idx.counters.records_dropped == dropped + 1

    redis_server.start()  # same port, empty (no persistence)
    await until_healthy(idx, c)
    assert changes == [True, False]
    assert idx.counters.degraded_transitions == 1
    assert idx.counters.recoveries == 1
    await idx.record(M, "b", c)
    assert await lookup(idx, c) == {"b": len(c)}


async def test_hung_redis_times_out_then_resume_recovers(
    redis_server: RedisServer, index: tuple[RedisPrefixIndex, list[bool]]
) -> None:
    idx, changes = index
    chains = [chain(s) for s in range(8)]
    for i, c in enumerate(chains):
        await idx.record(M, "a" if i % 2 else "b", c[: 10 + i])

    redis_server.pause()
    results = await asyncio.gather(*(lookup(idx, c) for c in chains))
    assert all(r == {} for r in results)
    assert idx.counters.timeouts >= 3
    assert idx.state is IndexState.DEGRADED
    # Dropped, or timed out: a write that timed out may still be applied once Redis resumes.
    await asyncio.gather(*(idx.record(M, "a", c) for c in chains))
    assert await lookup(idx, chains[0]) == {}

    redis_server.resume()
    await until_healthy(idx, chains[0])
    assert changes == [True, False]
    # Connections that timed out were discarded: no late reply is read as another's answer.
    expected = [{"a" if i % 2 else "b": 10 + i} for i in range(len(chains))]
    answered = 0
    for _ in range(5):
        found = await asyncio.gather(*(lookup(idx, c) for c in chains))
        for got, want, c in zip(found, expected, chains, strict=True):
            late = {**want, "a": len(c)}  # the hung record, applied after the resume
            assert got in ({}, want, late)  # {} only if this very call timed out
            answered += got in (want, late)
    assert answered > 0


async def test_sync_task_recovers_without_traffic(
    redis_server: RedisServer, index: tuple[RedisPrefixIndex, list[bool]]
) -> None:
    idx, changes = index
    await idx.start()
    redis_server.stop()
    await until_degraded(idx, chain(1))
    redis_server.start()
    for _ in range(400):
        if idx.healthy:
            break
        await asyncio.sleep(0.025)
    assert idx.breaker_state is BreakerState.CLOSED
    assert changes == [True, False]


async def test_fire_and_forget_records_are_bounded_while_hung(redis_server: RedisServer) -> None:
    idx = RedisPrefixIndex(
        redis_server.url,
        key_prefix="fault:",
        write_timeout_s=0.2,
        breaker_failures=1000,
        max_inflight_records=4,
    )
    idx.configure_backends({"a": 10_000})
    try:
        redis_server.pause()
        tasks = [asyncio.create_task(idx.record(M, "a", chain(s))) for s in range(20)]
        done, pending = await asyncio.wait(tasks, timeout=HANG_GUARD_S)
        assert not pending
        assert all(t.exception() is None for t in done)
        assert idx.counters.records_dropped == 16
        assert idx.counters.record_errors == 4
        redis_server.resume()
    finally:
        await idx.close()


async def test_scripts_reload_after_a_script_flush(
    redis_server: RedisServer, index: tuple[RedisPrefixIndex, list[bool]]
) -> None:
    idx, _ = index
    c = chain(1)
    await idx.record(M, "a", c)
    client = redis.Redis.from_url(redis_server.url)
    client.script_flush()
    client.close()
    assert await lookup(idx, c) == {"a": len(c)}
    assert idx.counters.lookup_errors == 0


def no_listener_port() -> int:
    """A port nothing listens on (free now; only a master that never answers is wanted)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("refusal", ["oom", "readonly"])
async def test_error_replies_degrade_then_recover(
    redis_server: RedisServer, index: tuple[RedisPrefixIndex, list[bool]], refusal: str
) -> None:
    """Redis answers, but with errors (OOM when full, READONLY as a replica): that is a failure
    like a dead Redis (the index cannot keep its picture), not a success."""
    idx, changes = index
    c = chain(1)
    await idx.record(M, "a", c)
    assert await lookup(idx, c) == {"a": len(c)}
    client = redis.Redis.from_url(redis_server.url)
    try:
        if refusal == "oom":
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", "1")  # every write is refused with OOM
        else:
            client.replicaof("127.0.0.1", no_listener_port())  # writes: READONLY
        for s in range(20):
            await idx.record(M, "b", chain(100 + s))
            if not idx.healthy:
                break
        assert idx.state is IndexState.DEGRADED
        assert changes == [True]
        assert idx.counters.error_replies >= 3
        assert await lookup(idx, c) == {}  # routing by load: the index is not trusted
        assert idx.counters.lookups_skipped >= 1
    finally:
        if refusal == "oom":
            client.config_set("maxmemory", "0")
        else:
            client.replicaof("NO", "ONE")
        client.close()
    await until_healthy(idx, c)
    assert changes == [True, False]
    assert await lookup(idx, c) == {"a": len(c)}
    await idx.record(M, "b", c)
    assert await lookup(idx, c) == {"a": len(c), "b": len(c)}


async def test_error_replies_to_lookups_degrade(
    redis_server: RedisServer, index: tuple[RedisPrefixIndex, list[bool]]
) -> None:
    """Lookups refused by the server (a replica that will not serve stale data) open the lookup
    breaker, even though nothing else fails."""
    idx, changes = index
    c = chain(1)
    await idx.record(M, "a", c)
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.config_set("replica-serve-stale-data", "no")
        client.replicaof("127.0.0.1", no_listener_port())  # every script: MASTERDOWN
        await until_degraded(idx, c)
        assert changes == [True]
        assert idx.counters.error_replies >= 3
        assert idx.counters.timeouts == 0
    finally:
        client.replicaof("NO", "ONE")
        client.config_set("replica-serve-stale-data", "yes")
        client.close()
    await until_healthy(idx, c)
    assert changes == [True, False]
    assert await lookup(idx, c) == {"a": len(c)}


async def test_malformed_chains_never_touch_the_breaker() -> None:
    idx = RedisPrefixIndex("redis://127.0.0.1:9/0", breaker_failures=1)
    idx.configure_backends({"a": 10})
    try:
        assert await idx.lookup(M, [1 << 64, 5]) == {}
        await idx.record(M, "a", [-1])
        await idx.truncate(M, "a", [1 << 70, 1], 1)
        assert idx.healthy
        assert idx.counters.lookup_errors == 1
        assert idx.counters.record_errors == 2
    finally:
        await idx.close()
