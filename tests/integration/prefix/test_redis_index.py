"""The Redis index against a real redis-server and a real 3-master Redis Cluster (every test
runs on both, by the ``index_url`` fixture): semantics, sharing between replicas, keys."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from gateway.prefix.hashing import chain_hashes
from gateway.prefix.index import IndexState, PrefixIndex
from gateway.prefix.redis import RedisPrefixIndex
from gateway.prefix.staleness import StalenessConfig
from tests.support.redis_cluster import RedisClusterServers
from tests.unit.prefix.fakes import FakeClock

M = "model"
Factory = Callable[..., RedisPrefixIndex]


def chain(seed: int, n: int, shared: bytes = b"") -> list[int]:
    """A real hash chain: ``shared`` bytes (one byte per block) then seeded random blocks."""
    data = shared + random.Random(seed).randbytes(n)
    return chain_hashes(data[: max(n, len(shared))], 0, 1, 10_000)[:n]


@pytest.fixture
async def make_index(index_url: str, key_prefix: str) -> AsyncIterator[Factory]:
    made: list[RedisPrefixIndex] = []

    def make(**kw: Any) -> RedisPrefixIndex:
        kw.setdefault("key_prefix", key_prefix)
        kw.setdefault("clock", FakeClock())
        kw.setdefault("lookup_timeout_s", 2.0)
        kw.setdefault("write_timeout_s", 2.0)
        kw.setdefault(
            "staleness", StalenessConfig(safety_factor=1.0, rate_window_s=10.0, warmup_s=1.0)
        )
        idx = RedisPrefixIndex(index_url, **kw)
        idx.configure_backends({"a": 100_000, "b": 100_000})
        made.append(idx)
        return idx

    yield make
    for idx in made:
        await idx.close()


def keys_of(client: redis.Redis | redis.RedisCluster, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=f"{prefix}*", count=1000))


async def test_satisfies_protocol(make_index: Factory) -> None:
    idx = make_index()
    assert isinstance(idx, PrefixIndex)
    assert idx.state is IndexState.OK
    assert idx.healthy


@pytest.mark.parametrize(("stride", "head"), [(1, 1), (4, 2), (16, 16), (16, 100)])
async def test_longest_prefix_per_backend(make_index: Factory, stride: int, head: int) -> None:
    idx = make_index(marker_stride=stride, exact_head_blocks=head)
    c = chain(1, 70)
    assert await idx.lookup(M, c) == {}
    await idx.record(M, "a", c[:45])
    await idx.record(M, "b", c[:9])
    assert await idx.lookup(M, c) == {"a": 45, "b": 9}
    short = await idx.lookup(M, c[:3])
    floor = max(min(head, 3), 3 // stride * stride)  # the last marker at or before block 3
    assert short == {"a": floor, "b": floor}
    diverged = chain(2, 70, shared=random.Random(1).randbytes(20))
    assert diverged[:20] == c[:20]
    found = await idx.lookup(M, diverged)
    assert found["b"] == 9
    assert 20 - stride < found["a"] <= 20  # rounded down to a marker, never up
    if head >= 20 or 20 % stride == 0:
        assert found["a"] == 20
    assert await idx.lookup(M, chain(3, 70)) == {}
    assert await idx.lookup(M, []) == {}
    assert idx.counters.lookup_errors == 0


async def test_many_divergent_chains_through_one_head(make_index: Factory) -> None:
    idx = make_index(marker_stride=8, exact_head_blocks=8)
    head = random.Random(7).randbytes(5)
    chains = [chain(s, 30, shared=head) for s in range(20)]
    for i, c in enumerate(chains):
        await idx.record(M, "a" if i % 2 else "b", c[: 10 + i])
    for i, c in enumerate(chains):
        found = await idx.lookup(M, c)
        owner, other = ("a", "b") if i % 2 else ("b", "a")
        assert found[owner] == 10 + i
        assert found[other] == 5


async def test_truncate_keeps_leading_blocks(make_index: Factory) -> None:
    idx = make_index(marker_stride=4, exact_head_blocks=2)
    c = chain(1, 30)
    await idx.record(M, "a", c)
    await idx.record(M, "b", c)
    await idx.truncate(M, "a", c, 13)
    assert await idx.lookup(M, c) == {"a": 13, "b": 30}
    await idx.truncate(M, "a", c, 0)
    assert await idx.lookup(M, c) == {"b": 30}


async def test_forget_starts_a_new_epoch(make_index: Factory) -> None:
    clock = FakeClock()
    idx = make_index(clock=clock)
    c = chain(1, 20)
    await idx.record(M, "a", c)
    await idx.record(M, "b", c)
    clock.advance(1)
    await idx.forget("a")
    assert await idx.lookup(M, c) == {"b": 20}
    clock.advance(1)
    await idx.record(M, "a", c[:6])
    assert await idx.lookup(M, c) == {"a": 6, "b": 20}


async def test_two_replicas_share_records_and_forgets(make_index: Factory) -> None:
    clock = FakeClock()
    one = make_index(clock=clock)
    two = make_index(clock=clock)
    await one.start()
    await two.start()
    c = chain(1, 40)
    await one.record(M, "a", c)
    await two.record(M, "b", c[:12])
    assert await two.lookup(M, c) == {"a": 40, "b": 12}
    assert await one.lookup(M, c) == {"a": 40, "b": 12}
    clock.advance(1)
    await one.forget("a")
    assert await two.sync_shared_state()
    assert await two.lookup(M, c) == {"b": 12}


async def test_insertion_rate_counts_every_replica(make_index: Factory) -> None:
    clock = FakeClock()
    one = make_index(clock=clock)
    two = make_index(clock=clock)
    for idx in (one, two):
        await idx.start()
    for s in range(10):
        clock.advance(0.5)
        await one.record(M, "a", chain(100 + s, 50))
        await two.record(M, "a", chain(200 + s, 50))
        for idx in (one, two):
            assert await idx.sync_shared_state()
    rate_one = one.staleness.insertion_rate("a")
    rate_two = two.staleness.insertion_rate("a")
    assert rate_one > 0
    assert rate_one == pytest.approx(rate_two, rel=0.1)  # same counter, synced at other times


async def test_rerecording_a_held_chain_inserts_nothing(
    make_index: Factory, sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str
) -> None:
    clock = FakeClock()
    idx = make_index(clock=clock)
    c = chain(1, 40)
    await idx.record(M, "a", c)
    clock.advance(5)
    await idx.record(M, "a", c)
    await idx.record(M, "a", c[:10] + chain(2, 5))
    assert await idx.sync_shared_state()
    assert int(sync_redis.hget(f"{key_prefix}state", "n:a") or 0) == 45


async def test_entries_age_out_with_the_shared_insertion_rate(make_index: Factory) -> None:
    clock = FakeClock()
    idx = make_index(clock=clock)
    idx.configure_backends({"a": 2000})
    old = chain(1, 20)
    await idx.record(M, "a", old)
    for s in range(40):  # 100 new blocks/s into 2000 blocks: residency about 20 s
        clock.advance(1.0)
        await idx.record(M, "a", chain(1000 + s, 100))
        assert await idx.sync_shared_state()
    assert 10 < idx.staleness.residency_s("a") < 40
    assert await idx.lookup(M, old) == {}
    fresh = chain(2, 20)
    await idx.record(M, "a", fresh)
    assert await idx.lookup(M, fresh) == {"a": 20}


async def test_next_turn_matches_the_previous_turn_exactly(make_index: Factory) -> None:
    idx = make_index(marker_stride=16, exact_head_blocks=4)
    turn = random.Random(1).randbytes(200)
    previous: dict[str, int] = {}
    for length in (37, 58, 75, 123):  # each turn extends the previous one
        c = chain(0, length, shared=turn)
        assert await idx.lookup(M, c) == previous
        await idx.record(M, "a", c)
        previous = {"a": length}


async def test_recent_refresh_is_skipped_then_rewritten(
    make_index: Factory, sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str
) -> None:
    clock = FakeClock()
    idx = make_index(clock=clock, marker_stride=4, exact_head_blocks=2, fresh_s=2.0)
    c = chain(1, 8)
    await idx.record(M, "a", c)
    key = f"{key_prefix}{{{c[0]:016x}}}".encode() + c[1].to_bytes(8, "big") + b"a"
    first = int(sync_redis.get(key) or 0)
    assert first == 1000 * 1000
    clock.advance(1.0)
    await idx.record(M, "a", c)
    assert int(sync_redis.get(key) or 0) == first
    clock.advance(2.0)
    await idx.record(M, "a", c)
    assert int(sync_redis.get(key) or 0) == first + 3000


async def test_keys_share_the_chain_hash_tag_and_expire(
    make_index: Factory, sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str
) -> None:
    idx = make_index(marker_stride=4, exact_head_blocks=2, ttl_s=600.0)
    chains = [chain(s, 30) for s in range(3)]
    for c in chains:
        await idx.record(M, "a", c)
    keys = [k for k in keys_of(sync_redis, key_prefix) if not k.endswith(b"state")]
    # markers at blocks 1-2, multiples of 4 up to 28 and block 30, plus one end-bits key
    assert len(keys) == 3 * (2 + 7 + 1 + 1)
    tags = {k[len(key_prefix) : k.index(b"}") + 1] for k in keys}
    assert tags == {f"{{{c[0]:016x}}}".encode() for c in chains}
    for k in keys:  # Cluster hashes the text between the first "{" and the next "}"
        assert k.index(b"{") == len(key_prefix)
        assert k.index(b"}") == len(key_prefix) + 17
        assert 0 < int(sync_redis.pttl(k)) <= 600_000


async def test_cluster_scripts_run_on_the_node_owning_each_chain(
    redis_cluster: RedisClusterServers,
) -> None:
    """Every key of a chain is in its hash tag's slot; chains spread over all three masters."""
    redis_cluster.wait_ok()
    key_prefix = f"test:{uuid.uuid4().hex[:12]}:"
    idx = RedisPrefixIndex(
        redis_cluster.url, key_prefix=key_prefix, marker_stride=4, exact_head_blocks=2
    )
    idx.configure_backends({"a": 100_000})
    chains = [chain(s, 12) for s in range(24)]
    client = redis_cluster.client()
    try:
        for c in chains:
            await idx.record(M, "a", c)
        owners: set[str] = set()
        for c in chains:
            assert await idx.lookup(M, c) == {"a": 12}
            tag = f"{key_prefix}{{{c[0]:016x}}}".encode()
            slot = client.keyslot(tag)
            keys = list(client.scan_iter(match=f"{key_prefix}{{{c[0]:016x}}}*", count=1000))
            assert len(keys) == 2 + 2 + 1  # markers 1, 2, 4, 8, 12 (block 12 is a multiple)
            assert {client.keyslot(k) for k in keys} == {slot}
            owners.add(client.nodes_manager.get_node_from_slot(slot).name)
        assert len(owners) == 3
        assert idx.counters.lookup_errors == idx.counters.record_errors == 0
    finally:
        for key in client.scan_iter(match=f"{key_prefix}*", count=1000):
            client.unlink(key)
        client.close()
        await idx.close()


async def test_long_chains_are_capped(make_index: Factory) -> None:
    idx = make_index(max_chain_blocks=50)
    c = chain(1, 80)
    await idx.record(M, "a", c)
    assert await idx.lookup(M, c) == {"a": 50}


async def test_unconfigured_backends_are_not_looked_up(make_index: Factory) -> None:
    idx = make_index()
    c = chain(1, 10)
    await idx.record(M, "x", c)
    assert await idx.lookup(M, c) == {"x": 10}
    idx.configure_backends({"a": 10})
    assert await idx.lookup(M, c) == {}


def test_key_prefix_must_not_hold_braces() -> None:
    with pytest.raises(ValueError, match="hash tag"):
        RedisPrefixIndex("redis://127.0.0.1:1/0", key_prefix="x{y}:")
