"""Round-robin ranking: the baseline policy, rotating over healthy candidates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from gateway.fleet.registry import Backend

B = TypeVar("B", bound=Backend)


class RoundRobinRouter:
    """Ranks candidates starting one past where the previous request started."""

    def __init__(self) -> None:
        self._counter = 0

    def rank(self, candidates: Sequence[B]) -> list[B]:
        """Healthy candidates in rotating order, then unhealthy ones as a last resort."""
        healthy = [b for b in candidates if b.state.healthy]
        pool = healthy or list(candidates)
        if not pool:
            return []
        start = self._counter % len(pool)
        self._counter += 1
        ranked = pool[start:] + pool[:start]
        if healthy and len(healthy) < len(candidates):
            ranked += [b for b in candidates if not b.state.healthy]
        return ranked
