"""Baseline policies for comparison: round-robin, least-loaded, and SGLang's threshold rule."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from gateway.fleet.registry import Backend
from gateway.routing.filters import BreakerFilter, HealthFilter
from gateway.routing.scheduler import rank_by_total
from gateway.routing.scorers import backend_load
from gateway.routing.types import Decision, RouteRequest
from gateway.settings import ThresholdSettings

_HEALTH = HealthFilter()
_BREAKER = BreakerFilter()


def usable(request: RouteRequest, candidates: Sequence[Backend]) -> list[Backend]:
    """Healthy candidates (failing open, as probes lag) whose circuit admits an attempt."""
    return _BREAKER.keep(request, _HEALTH.keep(request, candidates))


class RoundRobinRouter:
    """Rotates over healthy candidates, ignoring caches and load."""

    name = "round_robin"

    def __init__(self) -> None:
        self._counter = 0

    def decide(self, request: RouteRequest, candidates: Sequence[Backend]) -> Decision:
        """Healthy candidates starting one past the previous start."""
        started = time.perf_counter()
        pool = usable(request, candidates)
        if not pool:
            return Decision([], self.name)
        start = self._counter % len(pool)
        self._counter += 1
        ranked = [*pool[start:], *pool[:start]]
        return Decision(ranked, self.name, elapsed_s=time.perf_counter() - started)


class LeastLoadedRouter:
    """The backend with the fewest requests in flight first."""

    name = "least_loaded"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def decide(self, request: RouteRequest, candidates: Sequence[Backend]) -> Decision:
        """Rank by load, ties at random."""
        started = time.perf_counter()
        pool = usable(request, candidates)
        ranked = rank_by_total(pool, [-backend_load(b) for b in pool], self._rng)
        return Decision(ranked, self.name, elapsed_s=time.perf_counter() - started)


class ThresholdRouter:
    """SGLang-style cache-aware rule, as that router documents it.

    When load is skewed (max - min in flight above an absolute threshold and max above a
    relative multiple of min) send to the least loaded; otherwise to the best prefix match if
    its match ratio exceeds the cache threshold; otherwise to the least loaded.
    """

    name = "sglang_threshold"

    def __init__(self, settings: ThresholdSettings, rng: random.Random) -> None:
        self._settings = settings
        self._rng = rng

    def decide(self, request: RouteRequest, candidates: Sequence[Backend]) -> Decision:
        """Apply the threshold rule; the rest of the ranking is by load."""
        started = time.perf_counter()
        pool = usable(request, candidates)
        if not pool:
            return Decision([], self.name)
        loads = [float(b.state.in_flight) for b in pool]
        by_load = rank_by_total(pool, [-x for x in loads], self._rng)
        low, high = min(loads), max(loads)
        s = self._settings
        imbalanced = high - low > s.balance_abs_threshold and high > s.balance_rel_threshold * low
        ranked = by_load
        if not imbalanced and request.total_blocks > 0:
            best = max(pool, key=request.matched_blocks)
            if request.matched_blocks(best) / request.total_blocks > s.cache_threshold:
                ranked = [best, *(b for b in by_load if b is not best)]
        return Decision(ranked, self.name, elapsed_s=time.perf_counter() - started)
