"""Prefix KV cache of a simulated backend: an LRU of chained block hashes with pinning."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixKVCache:
    """LRU set of block hashes with a capacity in blocks; O(1) per block per operation.

    Blocks held by running requests are pinned (reference counted) and never evicted; the
    others form the LRU. Blocks of one prompt are touched or released tail first, so the head
    of a prefix is the most recently used part and is evicted last (as vLLM frees a request's
    blocks in reverse order). `generation` changes on clear(): releases of pins taken before
    are ignored.
    """

    __slots__ = ("_free", "_pinned", "capacity", "evictions", "generation")

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError("capacity_blocks must be >= 1")
        self.capacity = capacity_blocks
        self.evictions = 0
        self.generation = 0
        self._free: OrderedDict[int, None] = OrderedDict()
        self._pinned: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._free) + len(self._pinned)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._free or block_hash in self._pinned

    @property
    def pinned(self) -> int:
        """Blocks currently held by running requests."""
        return len(self._pinned)

    def match(self, hashes: Sequence[int]) -> int:
        """Number of leading blocks of the chain present in the cache (longest prefix)."""
        free, pinned = self._free, self._pinned
        n = 0
        for h in hashes:
            if h not in free and h not in pinned:
                break
            n += 1
        return n

    def insert(self, hashes: Sequence[int]) -> None:
        """Insert or touch every block of the chain (unpinned), then evict LRU blocks."""
        free, pinned = self._free, self._pinned
        for h in reversed(hashes):
            if h in pinned:
                continue
            if h in free:
                free.move_to_end(h)
            else:
                free[h] = None
        self._evict()

    def acquire(self, hashes: Sequence[int]) -> None:
        """Pin every block of the chain (inserting missing ones), then evict LRU blocks."""
        free, pinned = self._free, self._pinned
        for h in hashes:
            count = pinned.get(h)
            if count is None:
                free.pop(h, None)
                pinned[h] = 1
            else:
                pinned[h] = count + 1
        self._evict()

    def release(self, hashes: Sequence[int], generation: int) -> None:
        """Unpin blocks acquired under `generation`; unpinned blocks become most recent."""
        if generation != self.generation:
            return
        free, pinned = self._free, self._pinned
        for h in reversed(hashes):
            count = pinned.get(h)
            if count is None:
                continue
            if count > 1:
                pinned[h] = count - 1
            else:
                del pinned[h]
                free[h] = None
        self._evict()

    def _evict(self) -> None:
        overflow = min(len(self._free) + len(self._pinned) - self.capacity, len(self._free))
        if overflow > 0:
            self.evictions += overflow
            free = self._free
            for _ in range(overflow):
                free.popitem(last=False)

    def clear(self) -> None:
        """Drop every block, pinned or not."""
        self._free.clear()
        self._pinned.clear()
        self.generation += 1

    @property
    def usage(self) -> float:
        """Occupied fraction of the capacity, 0..1."""
        return min(1.0, len(self) / self.capacity)
