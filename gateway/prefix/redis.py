"""Redis cache-location index shared by every gateway replica.

Key schema (``P`` = key prefix, default ``pg:``; h_i = hash of block i, 1-based, as u64):

* ``P{<h_1 as 16 hex>}<raw 8-byte big-endian h_i><backend id>``: STRING marker = last time
  (integer ms) the backend was recorded holding the chain through block i, PEXPIRE'd to
  ``ttl_s`` on every write. Written for the *marked* blocks of each recorded chain: every block
  i <= ``exact_head_blocks`` (H), every multiple of ``marker_stride`` (G), and the chain's
  last block.
* ``P{<h_1 as 16 hex>}e<raw 8-byte h_q><backend id>``: end bits (SETBIT, same TTL): bit r says
  a chain through marked block q ended at block q + r, so lookups check only chain ends that
  exist instead of every unmarked block up to the next marker.
* All keys of one chain share the hash tag ``{h_1}`` (one Cluster slot; a script only touches
  keys of its chain); different chains spread across slots by their first block.
* ``Pstate``: HASH ``e:<backend>`` → epoch start (ms; entries recorded before never match) and
  ``n:<backend>`` → blocks newly inserted by all replicas (a counter the staleness model turns
  into an insertion rate). Synced by a background task every ``sync_interval_s``.

Precision: exact for matches of up to H blocks, at multiples of G and at the end of any recorded
chain (so a conversation's next turn matches its previous turn exactly). A match that ends
elsewhere (a prompt diverging mid-stride from a longer recorded one) is rounded down to the
previous marker: it under-reports by < G blocks and never over-reports.

Cost: one EVALSHA round trip per lookup (one MGET of block 1 for every backend, a GET binary
search over the marked blocks per backend still matching, one MGET of their end bits and one of
the chain ends they name) and per record (the same search for one backend, then one SET PX per
marker not refreshed within ``fresh_s``). A 512-block chain has at most H + 512/G + 1 = 49
markers per backend with the defaults. Model names are not part of keys: chains are already
seeded by model and salt.

Measured (bench/index_micro.py, Redis 7.0, 512-block chains, 8 backends, defaults, a shared
2-core machine), Redis server time per call (``INFO commandstats``): lookup 88-120 µs when the
8 backends hold 8 different prefix lengths, 33-45 µs with one holder; record 180-240 µs for a
new chain, 83-120 µs rewriting a held one, 23-28 µs when refreshed within ``fresh_s``. Memory:
15.2 bytes per recorded (block, backend), i.e. 14.5 MiB per million blocks (about 150 bytes per
marker key), from ``INFO memory`` around 1,000,000 recorded blocks.

Redis Cluster (``redis+cluster://``, see ``redis_cluster.py``): a chain script touches only
keys of its chain's hash tag and the state HASH is one key, so every script runs on one node;
nothing scans or deletes across slots (``forget`` is an epoch in the state HASH).

Failure handling (``redis_guard.py``): hard timeouts; timeouts, connection errors and error
replies are failures; lookups and writes have a breaker each (``IndexBreakers``); while either
is open lookups return {} at once (load-only routing) and records are dropped; trial calls after
a cool-down (the sync task makes them when there is no traffic) close them again by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.prefix.breaker import BreakerState, IndexBreakers
from gateway.prefix.index import IndexCounters, IndexState
from gateway.prefix.redis_guard import GuardedScripts
from gateway.prefix.redis_scripts import LOOKUP, RECORD, TRUNCATE
from gateway.prefix.redis_state import SharedBackendState, SharedStateSync
from gateway.prefix.staleness import Clock, StalenessConfig, StalenessModel

_log = logging.getLogger("gateway.prefix.redis")
_BAD_CHAIN = (struct.error, TypeError, ValueError, OverflowError)


def _ms(t: float) -> int:
    """Seconds → integer ms; -inf (no cutoff) → -1."""
    return -1 if t == -math.inf else max(math.floor(t * 1000.0), -1)


def _pack(hashes: Sequence[int], limit: int) -> bytes:
    n = min(len(hashes), limit)
    return struct.pack(f">{n}Q", *hashes[:n])


class RedisPrefixIndex:
    """The shared index (see the module docstring for keys, costs and failure handling).

    ``clock`` must be wall-clock seconds that every replica shares (entry times written by one
    replica are aged by another); the memory index can use a monotonic clock instead.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "pg:",
        marker_stride: int = 16,
        exact_head_blocks: int = 16,
        max_chain_blocks: int = 4096,
        ttl_s: float = 3600.0,
        fresh_s: float = 1.0,
        lookup_timeout_s: float = 0.05,
        write_timeout_s: float = 0.5,
        sync_interval_s: float = 1.0,
        breaker_failures: int = 5,
        breaker_cooldown_s: float = 1.0,
        max_inflight_records: int = 64,
        max_connections: int = 32,
        staleness: StalenessConfig | None = None,
        clock: Clock = time.time,
        on_degraded_change: Callable[[bool], None] | None = None,
    ) -> None:
        if "{" in key_prefix or "}" in key_prefix:
            raise ValueError("key_prefix must not contain '{' or '}' (they form the hash tag)")
        if min(marker_stride, exact_head_blocks, max_chain_blocks) < 1:
            raise ValueError("marker_stride, exact_head_blocks, max_chain_blocks must be >= 1")
        if min(ttl_s, lookup_timeout_s, write_timeout_s, sync_interval_s) <= 0:
            raise ValueError("ttl_s, timeouts and sync_interval_s must be > 0")
        self._prefix = key_prefix.encode()
        self._chain_args = (marker_stride, exact_head_blocks)
        self._max_chain = max_chain_blocks
        self._ttl_ms = max(int(ttl_s * 1000), 1)
        self._fresh_s = fresh_s
        self._lookup_timeout = lookup_timeout_s
        self._write_timeout = write_timeout_s
        self._sync_interval = sync_interval_s
        self._max_inflight = max_inflight_records
        self._clock = clock
        self._counters = IndexCounters()
        self._on_degraded_change = on_degraded_change
        breakers = IndexBreakers(
            failure_threshold=breaker_failures,
            cooldown_s=breaker_cooldown_s,
            clock=clock,
            on_change=self._degraded_changed,
        )
        self._breakers = breakers
        self._redis = GuardedScripts(
            url,
            breakers=breakers,
            counters=self._counters,
            max_connections=max_connections,
            socket_timeout_s=max(lookup_timeout_s, write_timeout_s) * 2,
        )
        self._model = StalenessModel(staleness or StalenessConfig(max_age_s=ttl_s), clock=clock)
        self._shared = SharedBackendState(self._model)
        self._sync = SharedStateSync(
            self._redis,
            self._shared,
            self._counters,
            state_key=self._prefix + b"state",
            probe_key=self._prefix + b"{probe}",
            probe_args=self._chain_args,
            ttl_ms=self._ttl_ms,
            write_timeout_s=write_timeout_s,
            lookup_timeout_s=lookup_timeout_s,
            clock=clock,
        )
        self._inflight = 0
        self._sync_task: asyncio.Task[None] | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> IndexState:
        """DEGRADED while the breaker is open or half-open."""
        return IndexState.OK if self.healthy else IndexState.DEGRADED

    @property
    def healthy(self) -> bool:
        """True when lookups and writes go to Redis."""
        return self._breakers.closed

    @property
    def breaker_state(self) -> BreakerState:
        """The worse of the lookup and write breakers' states (closed, open, half_open)."""
        return self._breakers.state

    @property
    def counters(self) -> IndexCounters:
        """Live counters."""
        return self._counters

    @property
    def staleness(self) -> StalenessModel:
        """The staleness model fed by the shared state."""
        return self._model

    def _degraded_changed(self, degraded: bool) -> None:
        if degraded:
            self._counters.degraded_transitions += 1
            _log.warning(
                "Redis prefix index degraded, routing by load until Redis answers again "
                "(last failure: %s)",
                self._redis.last_failure or "unknown",
            )
        else:
            self._counters.recoveries += 1
            _log.info("Redis prefix index recovered")
        if self._on_degraded_change is not None:
            self._on_degraded_change(degraded)

    def configure_backends(self, capacities: Mapping[str, int]) -> None:
        """Set the fleet's capacities (blocks); unlisted backends are no longer looked up."""
        self._model.configure(capacities)

    # -- chain calls ---------------------------------------------------------------------------

    def _chain(self, hashes: Sequence[int]) -> tuple[bytes, list[Any]]:
        """The chain's base key and its first script arguments (raises on a non-u64 chain)."""
        packed = _pack(hashes, self._max_chain)
        return b"%s{%016x}" % (self._prefix, hashes[0]), [packed, *self._chain_args]

    async def lookup(self, model: str, hashes: Sequence[int]) -> dict[str, int]:
        """Leading blocks each backend holds; {} when degraded, on error or after the timeout."""
        self._counters.lookups += 1
        backends = self._model.backends()
        if not hashes or not backends:
            return {}
        try:
            key, args = self._chain(hashes)
        except _BAD_CHAIN:
            self._counters.lookup_errors += 1
            return {}
        now = self._clock()
        for backend in backends:
            args += (backend, _ms(self._model.cutoff(backend, now)))
        if not self._breakers.allow_lookup():
            self._counters.lookups_skipped += 1
            return {}
        ok, counts = await self._redis.run(
            LOOKUP, key, args, limit_s=self._lookup_timeout, lookup=True
        )
        try:
            if ok:
                return {b: int(c) for b, c in zip(backends, counts, strict=True) if c}
        except (TypeError, ValueError):
            pass
        self._counters.lookup_errors += 1
        return {}

    async def record(self, model: str, backend_id: str, hashes: Sequence[int]) -> None:
        """Record a routed chain (bounded in flight, dropped while degraded; never raises)."""
        self._counters.records += 1
        if not hashes:
            return
        try:
            key, args = self._chain(hashes)
        except _BAD_CHAIN:
            self._counters.record_errors += 1
            return
        if self._inflight >= self._max_inflight or not self._breakers.allow_write():
            self._counters.records_dropped += 1
            return
        self._model.ensure(backend_id)
        now = self._clock()
        live_cut = self._model.cutoff(backend_id, now)
        fresh_cut = max(now - self._fresh_s, live_cut)
        args += (backend_id, _ms(now), self._ttl_ms, _ms(live_cut), _ms(fresh_cut))
        self._inflight += 1
        try:
            ok, inserted = await self._redis.run(RECORD, key, args, limit_s=self._write_timeout)
        finally:
            self._inflight -= 1
        if ok and isinstance(inserted, int):
            self._shared.add_inserted(backend_id, inserted)
        else:
            self._counters.record_errors += 1

    async def truncate(
        self, model: str, backend_id: str, hashes: Sequence[int], keep_blocks: int
    ) -> None:
        """Drop the backend's entries for ``hashes[keep_blocks:]`` (never raises)."""
        self._counters.truncates += 1
        if len(hashes) <= keep_blocks:
            return
        try:
            key, args = self._chain(hashes)
        except _BAD_CHAIN:
            self._counters.record_errors += 1
            return
        if not self._breakers.allow_write():
            return  # degraded: the entries age out anyway
        args += (backend_id, max(keep_blocks, 0), _ms(self._clock()), self._ttl_ms)
        ok, _ = await self._redis.run(TRUNCATE, key, args, limit_s=self._write_timeout)
        if not ok:
            self._counters.record_errors += 1

    async def forget(self, backend_id: str) -> None:
        """New epoch for a backend: applied locally at once, shared through Redis (never raises)."""
        self._counters.forgets += 1
        self._shared.add_epoch(backend_id, _ms(self._model.new_epoch(backend_id)))
        await self.sync_shared_state()

    # -- shared state --------------------------------------------------------------------------

    async def sync_shared_state(self) -> bool:
        """Push pending epochs and insert counts, pull every backend's; True on success."""
        return await self._sync.sync()

    async def start(self) -> None:
        """Sync the shared state once (bounded) and start the periodic sync task."""
        if self._sync_task is None:
            await self.sync_shared_state()
            self._sync_task = asyncio.create_task(
                self._sync.run(self._sync_interval), name="prefix-index-sync"
            )

    async def close(self) -> None:
        """Stop the sync task and close the connection pools."""
        task, self._sync_task = self._sync_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._redis.close()
