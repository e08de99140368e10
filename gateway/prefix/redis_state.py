"""Per-backend state the Redis index shares across replicas: epochs and insertion counters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gateway.prefix.breaker import BreakerState
from gateway.prefix.index import IndexCounters
from gateway.prefix.redis_guard import GuardedScripts
from gateway.prefix.redis_scripts import LOOKUP, SYNC
from gateway.prefix.staleness import Clock, StalenessModel


class SharedBackendState:
    """Local deltas waiting to be pushed, and how a pulled snapshot updates the staleness model.

    The snapshot is the flat HGETALL of the state HASH: ``e:<backend>`` → epoch start in ms,
    ``n:<backend>`` → blocks inserted by every replica (monotonic while Redis keeps it).
    """

    def __init__(self, model: StalenessModel) -> None:
        self._model = model
        self._inserts: dict[str, int] = {}
        self._epochs: dict[str, int] = {}

    def add_inserted(self, backend: str, blocks: int) -> None:
        """Count blocks a record inserted (pushed at the next sync)."""
        self._inserts[backend] = self._inserts.get(backend, 0) + blocks

    def add_epoch(self, backend: str, epoch_ms: int) -> None:
        """A backend restarted (pushed at the next sync; the highest epoch wins)."""
        self._epochs[backend] = max(self._epochs.get(backend, -1), epoch_ms)

    def take(self, ttl_ms: int) -> tuple[list[Any], dict[str, int], dict[str, int]]:
        """Sync script arguments and the deltas they carry (to requeue if the push fails)."""
        epochs, self._epochs = self._epochs, {}
        inserts, self._inserts = self._inserts, {}
        args: list[Any] = [ttl_ms, len(epochs)]
        for backend, epoch_ms in epochs.items():
            args += (backend, epoch_ms)
        for backend, count in inserts.items():
            args += (backend, count)
        return args, epochs, inserts

    def requeue(self, epochs: dict[str, int], inserts: dict[str, int]) -> None:
        """Put back deltas whose push failed."""
        for backend, epoch_ms in epochs.items():
            self.add_epoch(backend, epoch_ms)
        for backend, count in inserts.items():
            self.add_inserted(backend, count)

    def apply(self, flat: Sequence[bytes], now: float) -> None:
        """Feed a pulled snapshot into the staleness model (tracked backends only)."""
        model = self._model
        unseen = set(model.backends())
        for i in range(0, len(flat) - 1, 2):
            name = flat[i].decode("utf-8", "replace")
            backend = name[2:]
            if not model.tracks(backend):
                continue
            value = int(flat[i + 1])
            if name.startswith("e:"):
                model.raise_epoch(backend, value / 1000.0)
            elif name.startswith("n:"):
                unseen.discard(backend)
                model.observe_total(backend, value, now)
        for backend in unseen:  # no shared counter yet: it starts from zero
            model.observe_total(backend, 0, now)


class SharedStateSync:
    """Pushes and pulls the shared state (the SYNC script) and, on the same schedule, makes the
    lookup breaker's trial when no traffic does (an empty lookup)."""

    def __init__(
        self,
        redis: GuardedScripts,
        shared: SharedBackendState,
        counters: IndexCounters,
        *,
        state_key: bytes,
        probe_key: bytes,
        probe_args: Sequence[Any],
        ttl_ms: int,
        write_timeout_s: float,
        lookup_timeout_s: float,
        clock: Clock,
    ) -> None:
        self._redis = redis
        self._shared = shared
        self._counters = counters
        self._state_key = state_key
        self._probe = (probe_key, [b"", *probe_args])
        self._ttl_ms = ttl_ms
        self._write_timeout = write_timeout_s
        self._lookup_timeout = lookup_timeout_s
        self._clock = clock
        self._lock = asyncio.Lock()

    async def sync(self) -> bool:
        """Push pending epochs and insert counts, pull every backend's; True on success."""
        if not self._redis.breakers.allow_write():
            return False
        async with self._lock:
            args, epochs, inserts = self._shared.take(self._ttl_ms * 2)
            ok, flat = await self._redis.run(
                SYNC, self._state_key, args, limit_s=self._write_timeout
            )
            if not ok:
                self._counters.sync_errors += 1
                self._shared.requeue(epochs, inserts)
                return False
            try:
                self._shared.apply(flat, self._clock())
            except (TypeError, ValueError, AttributeError):  # pushed, but unreadable reply
                self._counters.sync_errors += 1
                return False
            return True

    async def probe_lookups(self) -> None:
        """The lookup breaker's trial when it is open and no lookup came to make it."""
        breakers = self._redis.breakers
        if breakers.reads.state is BreakerState.CLOSED or not breakers.allow_lookup():
            return
        key, args = self._probe
        await self._redis.run(LOOKUP, key, args, limit_s=self._lookup_timeout, lookup=True)

    async def run(self, interval_s: float) -> None:
        """Sync and probe every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
                await self.probe_lookups()
            except Exception:  # the loop must outlive any surprise
                self._counters.sync_errors += 1
