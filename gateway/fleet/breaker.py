"""A per-backend circuit breaker fed by the outcome of every attempt sent to the backend."""

from __future__ import annotations

import enum
import logging
import math

from gateway.settings import BreakerSettings

log = logging.getLogger("gateway.fleet")

# The failure-rate window is kept as this many buckets of counts: O(1) memory and time.
_BUCKETS = 10


class BreakerState(enum.Enum):
    """Closed: traffic flows. Open: none until the cooldown ends. Half-open: one probe."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admission(enum.Enum):
    """What the breaker said to one attempt."""

    REFUSED = 0
    NORMAL = 1
    PROBE = 2


class CircuitBreaker:
    """Opens after consecutive failures or a failure rate over a window; a probe closes it.

    Open, it refuses every attempt until `cooldown_s` has passed; then it lets exactly one
    real request through (half-open). That probe's success closes it, its failure opens it for
    another cooldown. Attempts that ended with no verdict (the client left, 429) release the
    probe without deciding. Outcomes of attempts admitted before it opened are ignored.
    """

    __slots__ = (
        "_bucket_s",
        "_buckets",
        "_consecutive",
        "_probing",
        "_reopen_at",
        "_settings",
        "_state",
        "name",
        "opened",
    )

    def __init__(self, settings: BreakerSettings | None = None, name: str = "") -> None:
        self.name = name
        self._settings = settings if settings is not None else BreakerSettings()
        self._bucket_s = self._settings.window_s / _BUCKETS
        # Each bucket: [epoch, successes, failures]; the epoch is now // bucket_s.
        self._buckets = [[-1, 0, 0] for _ in range(_BUCKETS)]
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._reopen_at = 0.0
        self._probing = False
        self.opened = 0

    @property
    def settings(self) -> BreakerSettings:
        """The settings it runs with."""
        return self._settings

    def state(self, now: float) -> BreakerState:
        """The state as of `now` (open turns half-open once its cooldown is over)."""
        if self._state is BreakerState.OPEN and now >= self._reopen_at:
            return BreakerState.HALF_OPEN
        return self._state

    def available(self, now: float) -> bool:
        """Whether an attempt started now would be admitted (for routing and readiness)."""
        if not self._settings.enabled:
            return True
        state = self.state(now)
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probing
        )

    def retry_after_s(self, now: float) -> float:
        """Seconds until this breaker may admit an attempt again (0 when it would now)."""
        if self.available(now):
            return 0.0
        if self._state is BreakerState.OPEN and now < self._reopen_at:
            return self._reopen_at - now
        return self._settings.cooldown_s  # a probe is in flight: at most one more cooldown

    def admit(self, now: float) -> Admission:
        """Admit an attempt starting now, or refuse it; the half-open one becomes the probe."""
        if not self._settings.enabled or self._state is BreakerState.CLOSED:
            return Admission.NORMAL
        if self._probing or self.state(now) is not BreakerState.HALF_OPEN:
            return Admission.REFUSED
        self._state = BreakerState.HALF_OPEN
        self._probing = True
        return Admission.PROBE

    def record(self, admission: Admission, ok: bool, now: float, ended_run: int = 0) -> None:
        """The verdict of an attempt admitted as `admission` (`ended_run`: what its head's
        `answered` returned)."""
        if admission is Admission.PROBE:
            self._probing = False
            if ok:
                self._close()
            else:
                self._open(now, "its probe failed")
            return
        if admission is not Admission.NORMAL or self._state is not BreakerState.CLOSED:
            return
        bucket = self._bucket(now)
        if ok:
            self._consecutive = 0
            bucket[1] += 1
            return
        self._consecutive = max(self._consecutive, ended_run) + 1
        bucket[2] += 1
        settings = self._settings
        if self._consecutive >= settings.consecutive_failures:
            self._open(now, f"{self._consecutive} consecutive failures")
            return
        total, failed = self._window(now)
        if total >= settings.min_requests and failed >= settings.failure_rate * total:
            self._open(now, f"{failed} of {total} attempts failed in {settings.window_s:g} s")

    def answered(self, admission: Admission) -> int:
        """The backend sent a good response head to an attempt that has not ended yet.

        It is serving, so failures before this one are not consecutive with those after it.
        Streams last seconds while failures come back at once: counted only by when attempts
        end, a few quick 500s among many long streams in flight would read as consecutive.
        The attempt's verdict still comes when it ends (a probe's only then). Returns the
        failures in a row it ended: if this attempt fails after all (a stream broken off),
        its head proved nothing and `record` takes them back.
        """
        if admission is not Admission.NORMAL:
            return 0
        ended, self._consecutive = self._consecutive, 0
        return ended

    def release(self, admission: Admission) -> None:
        """An admitted attempt ended without a verdict (a probe goes back to waiting)."""
        if admission is Admission.PROBE:
            self._probing = False

    def window_counts(self, now: float) -> tuple[int, int]:
        """Attempts and failures within the window."""
        return self._window(now)

    def _open(self, now: float, why: str) -> None:
        self._state = BreakerState.OPEN
        self._reopen_at = now + self._settings.cooldown_s
        self.opened += 1
        log.warning(
            "backend %s circuit opened: %s (cooldown %g s)",
            self.name,
            why,
            self._settings.cooldown_s,
        )

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        for bucket in self._buckets:
            bucket[1] = bucket[2] = 0
        log.warning("backend %s circuit closed: its probe succeeded", self.name)

    def _bucket(self, now: float) -> list[int]:
        epoch = math.floor(now / self._bucket_s)
        bucket = self._buckets[epoch % _BUCKETS]
        if bucket[0] != epoch:
            bucket[0], bucket[1], bucket[2] = epoch, 0, 0
        return bucket

    def _window(self, now: float) -> tuple[int, int]:
        oldest = math.floor(now / self._bucket_s) - _BUCKETS + 1
        total = failed = 0
        for epoch, successes, failures in self._buckets:
            if epoch >= oldest:
                total += successes + failures
                failed += failures
        return total, failed
