"""The in-process index: prefix matching, LRU bound, forget, truncate and ageing out."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.prefix.hashing import chain_hashes
from gateway.prefix.index import IndexState, PrefixIndex
from gateway.prefix.memory import MemoryPrefixIndex, longest_live_prefix
from gateway.prefix.staleness import StalenessConfig
from tests.unit.prefix.fakes import FakeClock

M = "model"


def chain(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(n)]


def index(clock: FakeClock | None = None) -> MemoryPrefixIndex:
    cfg = StalenessConfig(safety_factor=1.0, rate_window_s=10.0, warmup_s=1.0)
    idx = MemoryPrefixIndex(staleness=cfg, clock=clock or FakeClock())
    idx.configure_backends({"a": 1000, "b": 1000})
    return idx


def test_satisfies_protocol() -> None:
    idx = index()
    assert isinstance(idx, PrefixIndex)
    assert idx.state is IndexState.OK
    assert idx.healthy


async def test_longest_prefix_per_backend() -> None:
    idx = index()
    c = chain(1, 40)
    await idx.record(M, "a", c[:30])
    await idx.record(M, "b", c[:10])
    assert await idx.lookup(M, c) == {"a": 30, "b": 10}
    assert await idx.lookup(M, c[:5]) == {"a": 5, "b": 5}
    assert await idx.lookup(M, chain(2, 40)) == {}
    assert await idx.lookup(M, []) == {}
    diverged = c[:20] + chain(3, 20)
    assert await idx.lookup(M, diverged) == {"a": 20, "b": 10}
    assert idx.counters.lookups == 5
    assert idx.counters.records == 2


async def test_lru_bound_evicts_tails_first() -> None:
    idx = index()
    idx.configure_backends({"a": 50})
    chains = [chain(s, 20) for s in range(10)]
    for c in chains:
        await idx.record(M, "a", c)
        assert idx.entries("a") <= 50
    assert idx.entries("a") == 50
    found = [(await idx.lookup(M, c)).get("a", 0) for c in chains]
    assert found[-2:] == [20, 20]
    assert found[-3] == 10  # only its head survived
    assert found[:-3] == [0] * 7


async def test_shrinking_capacity_trims_and_unlisted_backends_are_dropped() -> None:
    idx = index()
    await idx.record(M, "a", chain(1, 100))
    await idx.record(M, "b", chain(1, 100))
    idx.configure_backends({"a": 30})
    assert idx.entries("a") == 30
    assert await idx.lookup(M, chain(1, 100)) == {"a": 30}


async def test_long_chain_keeps_its_head() -> None:
    idx = index()
    idx.configure_backends({"a": 16})
    c = chain(1, 64)
    await idx.record(M, "a", c)
    assert await idx.lookup(M, c) == {"a": 16}


async def test_forget_drops_everything_until_recorded_again() -> None:
    clock = FakeClock()
    idx = index(clock)
    c = chain(1, 10)
    await idx.record(M, "a", c)
    await idx.record(M, "b", c)
    await idx.forget("a")
    assert await idx.lookup(M, c) == {"b": 10}
    clock.advance(1)
    await idx.record(M, "a", c[:4])
    assert await idx.lookup(M, c) == {"a": 4, "b": 10}


async def test_truncate_keeps_leading_blocks() -> None:
    idx = index()
    c = chain(1, 30)
    await idx.record(M, "a", c)
    await idx.truncate(M, "a", c, 12)
    assert await idx.lookup(M, c) == {"a": 12}
    await idx.truncate(M, "a", c, 0)
    assert await idx.lookup(M, c) == {}
    await idx.truncate(M, "zzz", c, 0)  # unknown backend: no-op


async def test_entries_age_out_after_residency() -> None:
    clock = FakeClock()
    idx = index(clock)
    idx.configure_backends({"a": 1000})
    old = chain(1, 10)
    await idx.record(M, "a", old)
    for seed in range(100, 130):  # 100 new blocks/s → residency about 10 s
        clock.advance(1.0)
        await idx.record(M, "a", chain(seed, 100))
    assert await idx.lookup(M, old) == {}
    assert 5 < idx.staleness.residency_s("a") < 20
    fresh = chain(200, 10)
    await idx.record(M, "a", fresh)
    assert await idx.lookup(M, fresh) == {"a": 10}


async def test_rerecording_a_held_chain_is_not_an_insertion() -> None:
    clock = FakeClock()
    idx = index(clock)
    c = chain(1, 50)
    await idx.record(M, "a", c)
    first = idx.staleness.insertion_rate("a")
    for _ in range(20):
        clock.advance(0.5)
        await idx.record(M, "a", c)
    assert idx.staleness.insertion_rate("a") < first


async def test_unknown_backend_gets_default_capacity() -> None:
    idx = MemoryPrefixIndex(staleness=StalenessConfig(default_capacity_blocks=5), clock=FakeClock())
    await idx.record(M, "new", chain(1, 9))
    assert idx.entries("new") == 5
    assert await idx.lookup(M, chain(1, 9)) == {"new": 5}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 30)), min_size=1, max_size=25))
async def test_lookup_matches_a_linear_scan(ops: list[tuple[int, int]]) -> None:
    """Recorded chains share prefixes; binary search must equal the obvious walk."""
    idx = index()
    idx.configure_backends({"a": 60})
    base = bytes(range(40))

    def branch_bytes(branch: int, keep: int, length: int) -> bytes:
        return base[:keep] + bytes([100 + branch]) * length

    for branch, length in ops:
        data = base[:length] if branch == 0 else branch_bytes(branch, length // 2, length)
        await idx.record(M, "a", chain_hashes(data, 0, 1, 100))
    lru = idx._lru["a"]
    for branch in range(5):
        data = base if branch == 0 else branch_bytes(branch, 15, 30)
        probe = chain_hashes(data, 0, 1, 100)
        walked = 0
        for h in probe:
            if h not in lru:
                break
            walked += 1
        assert longest_live_prefix(lru, probe, -1.0) == walked
