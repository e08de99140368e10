"""Prefix KV cache of a simulated backend: an LRU of chained block hashes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixKVCache:
    """LRU set of block hashes with a capacity in blocks; O(1) per block per operation.

    Blocks of one prompt are touched tail first, so the head of a prefix is the most recently
    used part and is evicted last (as vLLM frees a request's blocks in reverse order).
    """

    __slots__ = ("_blocks", "capacity", "evictions")

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError("capacity_blocks must be >= 1")
        self.capacity = capacity_blocks
        self.evictions = 0
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    def match(self, hashes: Sequence[int]) -> int:
        """Number of leading blocks of the chain present in the cache (longest prefix)."""
        blocks = self._blocks
        n = 0
        for h in hashes:
            if h not in blocks:
                break
            n += 1
        return n

    def insert(self, hashes: Sequence[int]) -> None:
        """Insert or touch every block of the chain, then evict least recently used blocks."""
        blocks = self._blocks
        for h in reversed(hashes):
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        overflow = len(blocks) - self.capacity
        if overflow > 0:
            self.evictions += overflow
            for _ in range(overflow):
                blocks.popitem(last=False)

    def clear(self) -> None:
        """Drop every block."""
        self._blocks.clear()

    @property
    def usage(self) -> float:
        """Occupied fraction of the capacity, 0..1."""
        return len(self._blocks) / self.capacity
