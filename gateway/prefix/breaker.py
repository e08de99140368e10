"""A consecutive-failure circuit breaker for the shared index's Redis calls (clock injected)."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from gateway.prefix.staleness import Clock


class BreakerState(StrEnum):
    """Closed (calls flow), open (calls short-circuit), half-open (one trial call at a time)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; one trial per ``cooldown_s``.

    ``on_change(degraded)`` is called when the breaker leaves CLOSED (True) or returns to it
    (False); exceptions raised by the callback are swallowed.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 1.0,
        clock: Clock,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        self._threshold = failure_threshold
        self._cooldown = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._since = 0.0
        self.opened = 0
        self.closed = 0

    @property
    def state(self) -> BreakerState:
        """Current state (an elapsed cool-down shows as OPEN until a call is allowed)."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        return self._failures

    def allow(self) -> bool:
        """May a call go to Redis now? In half-open, only one trial per cool-down."""
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if now - self._since < self._cooldown:
            return False
        self._state = BreakerState.HALF_OPEN
        self._since = now
        return True

    def success(self) -> None:
        """A call succeeded: close the breaker."""
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._state = BreakerState.CLOSED
            self.closed += 1
            self._notify(False)

    def failure(self) -> None:
        """A call failed or timed out."""
        self._failures += 1
        if self._state is BreakerState.CLOSED:
            if self._failures >= self._threshold:
                self._state = BreakerState.OPEN
                self._since = self._clock()
                self.opened += 1
                self._notify(True)
        else:
            self._state = BreakerState.OPEN
            self._since = self._clock()

    def _notify(self, degraded: bool) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(degraded)
        except Exception:  # a logging hook must never break the index
            return


class IndexBreakers:
    """A breaker for lookups and one for writes; the index is degraded while either is not closed.

    Lookups and writes fail for different reasons (a full or read-only Redis refuses writes and
    still answers reads; a slow one misses the short lookup timeout and still takes writes), so
    the successes of one kind must not hide the failures of the other. Lookups wait for both:
    an index that cannot record is not trusted to answer. ``on_change(degraded)`` is called when
    the pair as a whole degrades (True) or recovers (False).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 1.0,
        clock: Clock,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._on_change = on_change
        self._degraded = False
        self.reads = CircuitBreaker(
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
            clock=clock,
            on_change=self._changed,
        )
        self.writes = CircuitBreaker(
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
            clock=clock,
            on_change=self._changed,
        )

    @property
    def closed(self) -> bool:
        """Both breakers closed: lookups and writes flow."""
        return self.reads.state is BreakerState.CLOSED and self.writes.state is BreakerState.CLOSED

    @property
    def state(self) -> BreakerState:
        """The worse of the two states (open, then half-open, then closed)."""
        states = (self.reads.state, self.writes.state)
        for state in (BreakerState.OPEN, BreakerState.HALF_OPEN):
            if state in states:
                return state
        return BreakerState.CLOSED

    def allow_lookup(self) -> bool:
        """May a lookup go to Redis now? Never while writes are failing."""
        return self.writes.state is BreakerState.CLOSED and self.reads.allow()

    def allow_write(self) -> bool:
        """May a write (record, truncate, sync) go to Redis now?"""
        return self.writes.allow()

    def _changed(self, _: bool) -> None:
        degraded = not self.closed
        if degraded == self._degraded:
            return
        self._degraded = degraded
        if self._on_change is None:
            return
        try:
            self._on_change(degraded)
        except Exception:  # a logging hook must never break the index
            return
