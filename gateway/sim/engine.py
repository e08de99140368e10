"""Latency model and accounting of one simulated backend (FIFO prefill, concurrent decode)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from gateway.sim.config import SimBackendConfig
from gateway.sim.kvcache import PrefixKVCache

Outcome = Literal["success", "error", "cancelled", "aborted"]
_HIT_RATE_WINDOW = 64


@dataclass(slots=True)
class EngineStats:
    """Counters and gauges of one backend (plain ints/floats, mutated on its event loop)."""

    requests_total: int = 0
    requests_running: int = 0
    requests_waiting: int = 0
    waiting_prompt_tokens: int = 0
    success_total: int = 0
    success_stop_total: int = 0
    success_length_total: int = 0
    cancelled_total: int = 0
    errors_total: int = 0
    aborted_total: int = 0
    prefills_total: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    prefix_cache_queries_tokens: int = 0
    prefix_cache_hits_tokens: int = 0
    prefill_busy_seconds: float = 0.0
    active_blocks: int = 0
    epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)


class TicketState(Enum):
    """Where a request is in the engine."""

    NEW = 0
    WAITING = 1
    RUNNING = 2
    CLOSED = 3


class Ticket:
    """Per-request accounting handle; close() it exactly once (extra calls are ignored)."""

    __slots__ = ("blocks", "state")

    def __init__(self) -> None:
        self.state = TicketState.NEW
        self.blocks = 0


class SimEngine:
    """Per-backend engine model: one prefill at a time in FIFO order, decodes in parallel.

    Thread-safety: counters are mutated on the backend's event loop only; any thread may
    block in wait_for() until a predicate over the stats holds.
    """

    def __init__(self, config: SimBackendConfig) -> None:
        self.config = config
        self.stats = EngineStats()
        self.cache = PrefixKVCache(config.cache_capacity_blocks)
        self.prefill_s_per_token = config.time_scale / config.prefill_tokens_per_s
        self.decode_delay_s = config.decode_s_per_token * config.time_scale
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._hit_window: deque[tuple[int, int]] = deque(maxlen=_HIT_RATE_WINDOW)
        self._cond = threading.Condition()

    @property
    def zero_latency(self) -> bool:
        """True when prefill and decode take no time at all."""
        return self.config.time_scale == 0

    def open(self) -> Ticket:
        """Account a new generation request."""
        self.stats.requests_total += 1
        return Ticket()

    async def prefill(
        self, ticket: Ticket, n_tokens: int, hashes: Sequence[int], reserve: int
    ) -> int:
        """Queue for and run the prefill; returns the cached prompt tokens.

        `reserve` is the number of tokens (prompt + generation) to count as KV in use.
        Cancellation leaves the queue (or aborts the prefill) without caching anything.
        """
        if self.prefill_s_per_token == 0:
            return self._admit(ticket, n_tokens, hashes, reserve, insert=True)
        stats = self.stats
        ticket.state = TicketState.WAITING
        stats.requests_waiting += 1
        stats.waiting_prompt_tokens += n_tokens
        self._notify()
        lock = self._get_lock()
        try:
            await lock.acquire()
        finally:
            stats.waiting_prompt_tokens -= n_tokens
        try:
            stats.requests_waiting -= 1
            cached = self._admit(ticket, n_tokens, hashes, reserve, insert=False)
            self._notify()
            started = time.monotonic()
            try:
                await asyncio.sleep((n_tokens - cached) * self.prefill_s_per_token)
            finally:
                stats.prefill_busy_seconds += time.monotonic() - started
            self.cache.insert(hashes)
        finally:
            lock.release()
        return cached

    def _admit(
        self, ticket: Ticket, n_tokens: int, hashes: Sequence[int], reserve: int, *, insert: bool
    ) -> int:
        bs = self.config.block_size
        matched = min(self.cache.match(hashes), (n_tokens - 1) // bs) if hashes else 0
        cached = matched * bs
        if insert:
            self.cache.insert(hashes)
        stats = self.stats
        ticket.state = TicketState.RUNNING
        ticket.blocks = -(-reserve // bs)
        stats.requests_running += 1
        stats.active_blocks += ticket.blocks
        stats.prefills_total += 1
        stats.prompt_tokens_total += n_tokens
        stats.prefix_cache_queries_tokens += n_tokens
        stats.prefix_cache_hits_tokens += cached
        self._hit_window.append((cached, n_tokens))
        return cached

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    def close(self, ticket: Ticket, outcome: Outcome, finish_reason: str | None = None) -> None:
        """Finish a request: release its slot and count the outcome."""
        state = ticket.state
        if state is TicketState.CLOSED:
            return
        ticket.state = TicketState.CLOSED
        stats = self.stats
        if state is TicketState.WAITING:
            stats.requests_waiting -= 1
        elif state is TicketState.RUNNING:
            stats.requests_running -= 1
            stats.active_blocks -= ticket.blocks
        if outcome == "success":
            stats.success_total += 1
            if finish_reason == "stop":
                stats.success_stop_total += 1
            else:
                stats.success_length_total += 1
        elif outcome == "cancelled":
            stats.cancelled_total += 1
        elif outcome == "aborted":
            stats.aborted_total += 1
            stats.errors_total += 1
        else:
            stats.errors_total += 1
        self._notify()

    def reset_cache(self, *, restart: bool) -> None:
        """Drop the prefix cache; a restart also bumps the epoch."""
        self.cache.clear()
        self._hit_window.clear()
        if restart:
            self.stats.epoch += 1
        self._notify()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks held by running requests, 0..1."""
        return min(1.0, self.stats.active_blocks / self.config.cache_capacity_blocks)

    @property
    def recent_hit_rate(self) -> float:
        """Prefix hit fraction over the recent prefills."""
        queries = sum(q for _, q in self._hit_window)
        return sum(h for h, _ in self._hit_window) / queries if queries else 0.0

    def wait_for(self, predicate: Callable[[EngineStats], bool], timeout: float) -> bool:
        """Block the calling thread until predicate(stats) holds; False on timeout.

        Safe from any thread (it does not touch the event loop); do not call it from the
        backend's own loop thread.
        """
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.stats), timeout)
