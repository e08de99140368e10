"""Prefix KV cache: longest-prefix match, LRU eviction, clear."""

from __future__ import annotations

import pytest

from gateway.sim.kvcache import PrefixKVCache


def test_match_counts_the_longest_present_prefix() -> None:
    cache = PrefixKVCache(100)
    cache.insert([1, 2, 3])
    assert cache.match([1, 2, 3, 4]) == 3
    assert cache.match([1, 2, 9, 3]) == 2
    assert cache.match([9, 1, 2]) == 0
    assert cache.match([]) == 0


def test_insert_is_idempotent() -> None:
    cache = PrefixKVCache(10)
    cache.insert([1, 2, 3])
    cache.insert([1, 2, 3])
    assert len(cache) == 3
    assert cache.evictions == 0


def test_least_recently_used_chain_is_evicted_first() -> None:
    cache = PrefixKVCache(4)
    cache.insert([1, 2])
    cache.insert([3, 4])
    cache.insert([1, 2])  # touch: chain 3-4 is now the oldest
    cache.insert([5, 6])
    assert cache.match([1, 2]) == 2
    assert cache.match([3, 4]) == 0
    assert cache.match([5, 6]) == 2
    assert cache.evictions == 2
    assert len(cache) == 4


def test_tail_of_a_chain_is_evicted_before_its_head() -> None:
    cache = PrefixKVCache(4)
    cache.insert([1, 2, 3])
    cache.insert([7, 8])  # one block over capacity: the oldest block goes
    assert cache.match([1, 2, 3]) == 2  # head kept, tail block 3 evicted
    assert 3 not in cache


def test_chain_longer_than_capacity_keeps_its_head() -> None:
    cache = PrefixKVCache(3)
    cache.insert([1, 2, 3, 4, 5])
    assert cache.match([1, 2, 3, 4, 5]) == 3
    assert cache.usage == 1.0


def test_clear_empties_the_cache() -> None:
    cache = PrefixKVCache(8)
    cache.insert([1, 2])
    cache.clear()
    assert len(cache) == 0
    assert cache.match([1, 2]) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PrefixKVCache(0)


def test_pinned_blocks_are_never_evicted() -> None:
    cache = PrefixKVCache(4)
    cache.acquire([1, 2, 3])
    cache.insert([7, 8, 9])  # only one free slot: 8 and 9 are evicted at once, 7 stays
    assert cache.match([1, 2, 3]) == 3
    assert cache.pinned == 3
    assert len(cache) == 4
    cache.insert([10, 11])
    assert 7 not in cache
    assert cache.match([1, 2, 3]) == 3


def test_release_makes_blocks_recent_and_evictable_head_last() -> None:
    cache = PrefixKVCache(5)
    cache.insert([20, 21])
    cache.acquire([1, 2, 3])
    cache.acquire([1, 2])  # a second holder of the head
    cache.release([1, 2, 3], cache.generation)
    assert cache.pinned == 2  # 1 and 2 still held
    cache.release([1, 2], cache.generation)
    assert cache.pinned == 0
    cache.insert([30, 31, 32])  # evicts the oldest: 20, 21, then the tail 3
    assert (20 in cache, 21 in cache, 3 in cache) == (False, False, False)
    assert cache.match([1, 2]) == 2


def test_releases_from_before_a_clear_are_ignored() -> None:
    cache = PrefixKVCache(10)
    cache.acquire([1, 2])
    old = cache.generation
    cache.clear()
    cache.acquire([1])
    cache.release([1, 2], old)
    assert cache.pinned == 1
