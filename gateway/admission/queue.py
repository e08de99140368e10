"""The admission queue: requests wait here while every backend they may use is full.

Order: the lower tier rank first, a waiting request gaining one rank per `aging_s` so a
lower tier is never starved longer than the gap times `aging_s`; within a rank, weighted
fair between tenants (each admission advances its tenant's virtual time by 1 / weight);
within a tenant, first come first served. A request leaves when a slot frees for one of
its backends, when its tier's wait limit passes, or at once when its client goes away.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.errors import GatewayError
from gateway.fleet.registry import Backend
from gateway.metrics import GatewayMetrics
from gateway.routing.filters import full


@dataclass(eq=False, slots=True)
class Waiter:
    """One queued request."""

    rank: int
    tenant: str
    seq: int
    since: float
    backends: Sequence[Backend]
    admitted: asyncio.Event = field(default_factory=asyncio.Event)


class AdmissionQueue:
    """Holds requests until a backend of theirs has room (see the module doc)."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        aging_s: float,
        max_waiting: int,
        weights: dict[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._aging_s = aging_s
        self._max_waiting = max_waiting
        self._weights = weights or {}
        self._clock = clock
        self._waiting: list[Waiter] = []
        self._seq = 0
        self._virtual: dict[str, float] = {}
        self._virtual_now = 0.0
        # Woken but not yet counted on a backend: arrivals must not take their slots.
        self.granted = 0
        self._changed = asyncio.Condition()

    @property
    def depth(self) -> int:
        """Requests waiting now."""
        return len(self._waiting)

    def has_room(self, backends: Sequence[Backend], rank: int = 0) -> bool:
        """Whether a new arrival may go straight on: one of its backends has a slot beyond
        those promised to woken requests, and no request of its rank or better waits for
        any of them (a batch request queued for the long pool does not hold up a short chat).

        With no backend at all (every breaker open) there is nothing to wait for: the
        forwarder answers its 503 at once.
        """
        if not backends:
            return True
        if self._free_slots(backends) <= self.granted:
            return False
        if not self._waiting:
            return True
        ids = {b.id for b in backends}
        return not any(
            w.rank <= rank and any(b.id in ids for b in w.backends) for w in self._waiting
        )

    async def wait(
        self,
        tier: str,
        rank: int,
        tenant: str,
        backends: Sequence[Backend],
        limit_s: float,
        reject_status: int,
    ) -> None:
        """Wait for room on one of `backends`; raise the tier's error when `limit_s` passes."""
        if len(self._waiting) >= self._max_waiting:
            self._metrics.admission_rejections.labels(tier, tenant, "queue_full").inc()
            raise self._refusal(tier, reject_status, "the admission queue is full")
        self._seq += 1
        waiter = Waiter(rank, tenant, self._seq, self._clock(), backends)
        if not any(w.tenant == tenant for w in self._waiting):
            self._virtual[tenant] = max(self._virtual.get(tenant, 0.0), self._virtual_now)
        self._waiting.append(waiter)
        depth = self._metrics.queue_depth.labels(tier)
        depth.inc()
        await self._notify()
        admitted = False
        try:
            async with asyncio.timeout(limit_s):
                await waiter.admitted.wait()
            admitted = True
        except TimeoutError:
            self._metrics.admission_rejections.labels(tier, tenant, "queue_timeout").inc()
            raise self._refusal(tier, reject_status, f"no capacity within {limit_s:g} s") from None
        finally:
            depth.dec()
            self._metrics.queue_wait.labels(tier).observe(self._clock() - waiter.since)
            if not admitted:
                if waiter.admitted.is_set():  # woken, then cancelled before it could run
                    self.granted -= 1
                    self.wake()
                elif waiter in self._waiting:
                    self._waiting.remove(waiter)
            await self._notify()

    def started(self) -> None:
        """A woken request is now counted on its backend."""
        self.granted = max(0, self.granted - 1)

    def wake(self) -> None:
        """A slot may have freed: admit the best waiters that now have room."""
        now = self._clock()
        while self._waiting:
            ready = [w for w in self._waiting if any(not full(b) for b in w.backends)]
            if not ready or self.granted >= self._free_slots(
                [b for w in ready for b in w.backends]
            ):
                return
            best = min(ready, key=lambda w: self._order(w, now))
            self._waiting.remove(best)
            weight = self._weights.get(best.tenant, 1.0)
            self._virtual_now = self._virtual.get(best.tenant, 0.0)
            self._virtual[best.tenant] = self._virtual_now + 1.0 / weight
            self.granted += 1
            best.admitted.set()

    @staticmethod
    def _free_slots(backends: Sequence[Backend]) -> float:
        unique = {b.id: b for b in backends}
        return sum(
            max(0.0, b.max_concurrency - b.state.in_flight - b.state.exchanged_in_flight)
            for b in unique.values()
        )

    def _order(self, waiter: Waiter, now: float) -> tuple[int, float, int]:
        aged = waiter.rank - math.floor((now - waiter.since) / self._aging_s)
        return aged, self._virtual.get(waiter.tenant, 0.0), waiter.seq

    @staticmethod
    def _refusal(tier: str, status: int, why: str) -> GatewayError:
        return GatewayError(
            status,
            f"The fleet is at capacity for tier `{tier}` ({why}); retry later.",
            code="rate_limit_exceeded" if status == 429 else "capacity_exceeded",
            retry_after_s=1,
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_depth(self, depth: int) -> None:
        """Return once exactly `depth` requests wait (for tests and benchmarks)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._waiting) == depth)


def with_room_first(ranked: Sequence[Backend]) -> list[Backend]:
    """The ranking with backends that have room ahead of full ones (each group in order)."""
    return sorted(ranked, key=full)
