"""In-process cache-location index: one bounded LRU of block hashes per backend."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from gateway.prefix.index import IndexCounters, IndexState
from gateway.prefix.staleness import Clock, StalenessConfig, StalenessModel


def longest_live_prefix(lru: Mapping[int, float], hashes: Sequence[int], cutoff: float) -> int:
    """Leading blocks of ``hashes`` present in ``lru`` with a timestamp >= ``cutoff``.

    Binary search: chains are prefix-closed (block i's hash implies blocks < i, and a chain is
    touched tail-first so its head is never older than its tail), so presence is monotone.
    """
    n = len(hashes)
    get = lru.get
    t = get(hashes[0])
    if t is None or t < cutoff:
        return 0
    t = get(hashes[n - 1])
    if t is not None and t >= cutoff:
        return n
    lo, hi = 1, n - 1
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        t = get(hashes[mid - 1])
        if t is not None and t >= cutoff:
            lo = mid
        else:
            hi = mid - 1
    return lo


class MemoryPrefixIndex:
    """Per-backend LRU (hash → last recorded time), sized by the backend's capacity in blocks."""

    def __init__(
        self,
        *,
        staleness: StalenessConfig | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self._model = StalenessModel(staleness, clock=clock)
        self._lru: dict[str, OrderedDict[int, float]] = {}
        self._counters = IndexCounters()

    @property
    def state(self) -> IndexState:
        """Always OK: nothing here can fail."""
        return IndexState.OK

    @property
    def healthy(self) -> bool:
        """Always True."""
        return True

    @property
    def counters(self) -> IndexCounters:
        """Live counters."""
        return self._counters

    @property
    def staleness(self) -> StalenessModel:
        """The staleness model (rates, residency, epochs) for inspection."""
        return self._model

    def entries(self, backend_id: str) -> int:
        """Number of blocks held for a backend."""
        lru = self._lru.get(backend_id)
        return 0 if lru is None else len(lru)

    def configure_backends(self, capacities: Mapping[str, int]) -> None:
        """Set the fleet's capacities (blocks); unlisted backends are dropped."""
        for backend in self._model.configure(capacities):
            self._lru.pop(backend, None)
        for backend, lru in self._lru.items():
            self._trim(lru, self._model.capacity(backend))

    @staticmethod
    def _trim(lru: OrderedDict[int, float], capacity: int) -> None:
        while len(lru) > capacity:
            lru.popitem(last=False)

    async def lookup(self, model: str, hashes: Sequence[int]) -> dict[str, int]:
        """Leading blocks of ``hashes`` each backend holds (zeros omitted)."""
        self._counters.lookups += 1
        if not hashes or not self._lru:
            return {}
        now = self._clock()
        cutoff = self._model.cutoff
        found: dict[str, int] = {}
        for backend, lru in self._lru.items():
            if lru:
                matched = longest_live_prefix(lru, hashes, cutoff(backend, now))
                if matched:
                    found[backend] = matched
        return found

    async def record(self, model: str, backend_id: str, hashes: Sequence[int]) -> None:
        """Remember that ``backend_id`` holds this chain (touched tail first)."""
        self._counters.records += 1
        if not hashes:
            return
        now = self._clock()
        lru = self._lru.get(backend_id)
        if lru is None:
            self._model.ensure(backend_id)
            lru = self._lru[backend_id] = OrderedDict()
        live = longest_live_prefix(lru, hashes, self._model.cutoff(backend_id, now))
        move = lru.move_to_end
        for h in reversed(hashes):
            lru[h] = now
            move(h)
        self._trim(lru, self._model.capacity(backend_id))
        self._model.observe_inserted(backend_id, len(hashes) - live, now)

    async def forget(self, backend_id: str) -> None:
        """Drop a backend's entries and start a new epoch."""
        self._counters.forgets += 1
        lru = self._lru.get(backend_id)
        if lru is not None:
            lru.clear()
        self._model.new_epoch(backend_id)

    async def truncate(
        self, model: str, backend_id: str, hashes: Sequence[int], keep_blocks: int
    ) -> None:
        """Drop the backend's entries for ``hashes[keep_blocks:]``."""
        self._counters.truncates += 1
        lru = self._lru.get(backend_id)
        if lru is None:
            return
        for h in hashes[max(keep_blocks, 0) :]:
            lru.pop(h, None)

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to release."""
