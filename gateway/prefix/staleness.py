"""Staleness model: which index entries a backend has probably evicted, and since when it restarted.

Each backend's cache residency is estimated as ``capacity_blocks / insertion_rate`` where the
rate is an exponentially weighted moving average of newly inserted blocks per second (bias
corrected during warm-up, like Adam's moments). An entry last recorded more than
``residency * safety_factor`` ago is treated as evicted. A per-backend epoch start time hides
everything recorded before a backend restarted. Time comes from an injected clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]

TRUST_LOSS = 0.8
TRUST_REGAIN = 1.02
MIN_TRUST = 0.05


@dataclass(frozen=True, slots=True)
class StalenessConfig:
    """Tuning of the staleness model."""

    safety_factor: float = 0.8
    rate_window_s: float = 60.0
    warmup_s: float = 10.0
    default_capacity_blocks: int = 65536
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        if not self.safety_factor > 0:
            raise ValueError("safety_factor must be > 0")
        if not self.rate_window_s > 0:
            raise ValueError("rate_window_s must be > 0")
        if self.warmup_s < 0:
            raise ValueError("warmup_s must be >= 0")
        if self.default_capacity_blocks < 1:
            raise ValueError("default_capacity_blocks must be >= 1")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ValueError("max_age_s must be > 0")


class _Backend:
    __slots__ = ("acc", "acc_at", "capacity", "epoch", "last_total", "since", "trust")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.trust = 1.0
        self.epoch = -math.inf
        self.acc = 0.0
        self.acc_at = 0.0
        self.since: float | None = None
        self.last_total: int | None = None


class StalenessModel:
    """Per-backend capacity, insertion rate, residency and epoch."""

    def __init__(self, config: StalenessConfig | None = None, *, clock: Clock) -> None:
        self.config = config or StalenessConfig()
        self._clock = clock
        self._backends: dict[str, _Backend] = {}
        self._ids: tuple[str, ...] = ()

    def configure(self, capacities: Mapping[str, int]) -> list[str]:
        """Set the fleet (id → capacity in blocks); return the ids that were dropped."""
        removed = [b for b in self._backends if b not in capacities]
        for backend in removed:
            del self._backends[backend]
        for backend, capacity in capacities.items():
            self._state(backend).capacity = max(int(capacity), 1)
        self._ids = tuple(self._backends)
        return removed

    def _state(self, backend: str) -> _Backend:
        state = self._backends.get(backend)
        if state is None:
            state = self._backends[backend] = _Backend(self.config.default_capacity_blocks)
            self._ids = tuple(self._backends)
        return state

    def ensure(self, backend: str) -> None:
        """Start tracking a backend (default capacity) if it is unknown."""
        self._state(backend)

    def remove(self, backend: str) -> None:
        """Stop tracking a backend."""
        if self._backends.pop(backend, None) is not None:
            self._ids = tuple(self._backends)

    def tracks(self, backend: str) -> bool:
        """Is this backend tracked?"""
        return backend in self._backends

    def backends(self) -> tuple[str, ...]:
        """Tracked backend ids."""
        return self._ids

    def capacity(self, backend: str) -> int:
        """Cache capacity of a backend in index blocks."""
        return self._state(backend).capacity

    def observe_inserted(self, backend: str, blocks: int, now: float | None = None) -> None:
        """Count ``blocks`` newly inserted into a backend's cache."""
        state = self._state(backend)
        t = self._clock() if now is None else now
        if state.since is None:
            state.since = t
            state.acc_at = t
        state.acc = self._decayed(state, t) + max(blocks, 0)
        state.acc_at = max(t, state.acc_at)

    def observe_total(self, backend: str, total: int, now: float | None = None) -> None:
        """Feed a shared monotonic insertion counter (its first value is only a baseline)."""
        state = self._state(backend)
        last, state.last_total = state.last_total, total
        if last is None or total < last:
            t = self._clock() if now is None else now
            if state.since is None:
                state.since = t
                state.acc_at = t
            return
        self.observe_inserted(backend, total - last, now)

    def _decayed(self, state: _Backend, now: float) -> float:
        dt = now - state.acc_at
        if dt <= 0:
            return state.acc
        return state.acc * math.exp(-dt / self.config.rate_window_s)

    def insertion_rate(self, backend: str, now: float | None = None) -> float:
        """Estimated newly inserted blocks per second."""
        state = self._backends.get(backend)
        if state is None or state.since is None:
            return 0.0
        t = self._clock() if now is None else now
        window = self.config.rate_window_s
        span = max(t - state.since, self.config.warmup_s, 1e-9)
        return self._decayed(state, t) / (window * -math.expm1(-span / window))

    def residency_s(self, backend: str, now: float | None = None) -> float:
        """Estimated seconds a block stays cached after its last use (inf when idle)."""
        rate = self.insertion_rate(backend, now)
        if rate <= 0:
            return math.inf
        state = self._state(backend)
        return state.capacity * state.trust / rate

    def observe_prediction(self, backend: str, held: bool) -> None:
        """Learn from what the backend reported: it held what was predicted, or less.

        A shortfall means its cache keeps blocks for less time than capacity ÷ rate says
        (capacity overstated, other tenants, preemption): trust the capacity less, so its
        entries age out sooner. Correct predictions win the trust back slowly.
        """
        state = self._state(backend)
        if held:
            state.trust = min(1.0, state.trust * TRUST_REGAIN)
        else:
            state.trust = max(MIN_TRUST, state.trust * TRUST_LOSS)

    def trust(self, backend: str) -> float:
        """The fraction of the configured capacity currently believed (1 = all of it)."""
        return self._state(backend).trust

    def new_epoch(self, backend: str, at: float | None = None) -> float:
        """The backend restarted now (or ``at``): entries recorded before never match."""
        t = self._clock() if at is None else at
        self.raise_epoch(backend, t)
        return t

    def raise_epoch(self, backend: str, at: float) -> None:
        """Move the epoch start forward to ``at`` (never backward)."""
        state = self._state(backend)
        state.epoch = max(state.epoch, at)

    def epoch(self, backend: str) -> float:
        """Epoch start time (-inf when the backend never restarted)."""
        state = self._backends.get(backend)
        return -math.inf if state is None else state.epoch

    def cutoff(self, backend: str, now: float | None = None) -> float:
        """Entries recorded before this time are treated as evicted."""
        t = self._clock() if now is None else now
        cut = self.epoch(backend)
        residency = self.residency_s(backend, t)
        if residency != math.inf:
            cut = max(cut, t - residency * self.config.safety_factor)
        if self.config.max_age_s is not None:
            cut = max(cut, t - self.config.max_age_s)
        return cut
