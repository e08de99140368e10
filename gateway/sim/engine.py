"""Latency model and accounting of one simulated backend (batched steps or legacy FIFO)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from gateway.sim.config import SimBackendConfig
from gateway.sim.kvcache import PrefixKVCache
from gateway.sim.scheduler import BatchScheduler, FifoScheduler, Scheduler
from gateway.sim.state import EngineStats, Outcome, StepRecord, Ticket, TicketState
from gateway.sim.tokenizer import Tokenizer

__all__ = ["EngineStats", "Outcome", "SimEngine", "StepRecord", "Ticket", "TicketState"]

_HIT_RATE_WINDOW = 64
_STEP_LOG = 4096


class SimEngine:
    """Per-backend engine model: admission, prefix cache, KV accounting and a scheduler.

    The scheduler decides when prompt tokens are computed and output tokens produced
    (`scheduler.BatchScheduler` by default, `FifoScheduler` for the legacy model); this class
    keeps the books. Thread-safety: state is mutated on the backend's event loop only; any
    thread may block in wait_for() until a predicate over the stats holds.
    """

    def __init__(self, config: SimBackendConfig) -> None:
        self.config = config
        self.stats = EngineStats()
        self.cache = PrefixKVCache(config.cache_capacity_blocks)
        self.tokenizer = Tokenizer(config.bytes_per_token)
        self.prefill_s_per_token = config.time_scale / config.prefill_tokens_per_s
        self.decode_delay_s = config.decode_s_per_token * config.time_scale
        self.started_at = round(time.time(), 2)
        self.recent_steps: deque[StepRecord] = deque(maxlen=_STEP_LOG)
        self._hit_window: deque[tuple[int, int]] = deque(maxlen=_HIT_RATE_WINDOW)
        self._cond = threading.Condition()
        self._next_rid = 0
        self._private_blocks = 0  # KV blocks of running requests outside the shared prefix cache
        self.scheduler: Scheduler = (
            BatchScheduler(self) if config.scheduler == "batched" else FifoScheduler(self)
        )

    @property
    def zero_latency(self) -> bool:
        """True when prefill and decode take no time at all."""
        return self.config.time_scale == 0

    @property
    def decode_free(self) -> bool:
        """True when generated tokens cost no time (every token is ready after prefill)."""
        return self.decode_delay_s == 0

    def open(self) -> Ticket:
        """Account a new generation request."""
        self.stats.requests_total += 1
        self._next_rid += 1
        return Ticket(self._next_rid)

    # ---- the request's view -----------------------------------------------------------------
    async def prefill(
        self, ticket: Ticket, n_tokens: int, hashes: Sequence[int], max_tokens: int = 1
    ) -> int:
        """Queue for and run the prefill; returns the cached prompt tokens.

        Returns when the first output token exists. Cancellation leaves the queue (or aborts
        the prefill) without caching anything; the caller then close()s the ticket.
        """
        ticket.prompt_tokens = n_tokens
        ticket.hashes = hashes
        ticket.max_tokens = max(1, max_tokens)
        if self.zero_latency:
            self.admit(ticket)
            self.complete_prefill(ticket)
            return ticket.cached
        return await self.scheduler.prefill(ticket)

    async def decode(self, ticket: Ticket, produced: int) -> int:
        """Wait until more than `produced` output tokens exist; returns how many exist."""
        if ticket.generated > produced or ticket.generated >= ticket.max_tokens:
            return ticket.generated
        return await self.scheduler.decode(ticket, produced)

    async def finish(self, ticket: Ticket, produced: int) -> None:
        """Wait until every output token exists."""
        if ticket.generated < ticket.max_tokens:
            await self.scheduler.finish(ticket, produced)

    def close(self, ticket: Ticket, outcome: Outcome, finish_reason: str | None = None) -> None:
        """Finish a request: release its slot and blocks at once and count the outcome."""
        state = ticket.state
        if state is TicketState.CLOSED:
            return
        ticket.state = TicketState.CLOSED
        stats = self.stats
        if state is TicketState.WAITING:
            stats.requests_waiting -= 1
            stats.waiting_prompt_tokens -= ticket.prompt_tokens
        elif state is TicketState.RUNNING:
            stats.requests_running -= 1
            self._private_blocks -= ticket.blocks
            self.cache.release(ticket.hashes[: ticket.held], ticket.cache_generation)
            self._count_blocks()
        if state is not TicketState.NEW:
            self.scheduler.discard(ticket)
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

    # ---- the scheduler's hooks --------------------------------------------------------------
    def enqueue(self, ticket: Ticket) -> None:
        """Count a ticket as waiting."""
        ticket.state = TicketState.WAITING
        self.stats.requests_waiting += 1
        self.stats.waiting_prompt_tokens += ticket.prompt_tokens
        self._notify()

    def fits(self, ticket: Ticket) -> bool:
        """True when the ticket's uncached prompt blocks fit in the KV blocks not in use."""
        need = -(-ticket.prompt_tokens // self.config.block_size) - self.cache.match(ticket.hashes)
        return self.stats.active_blocks + need <= self.config.cache_capacity_blocks

    def admit(self, ticket: Ticket) -> None:
        """Start running a ticket: match and pin its cached prefix, count it as running."""
        stats = self.stats
        if ticket.state is TicketState.WAITING:
            stats.requests_waiting -= 1
            stats.waiting_prompt_tokens -= ticket.prompt_tokens
        bs = self.config.block_size
        n_tokens, hashes = ticket.prompt_tokens, ticket.hashes
        matched = min(self.cache.match(hashes), (n_tokens - 1) // bs) if hashes else 0
        self.cache.acquire(hashes[:matched])
        ticket.held = matched
        ticket.cache_generation = self.cache.generation
        ticket.cached = ticket.computed = matched * bs
        ticket.state = TicketState.RUNNING
        ticket.blocks = -(-(n_tokens + ticket.max_tokens) // bs) - matched
        self._private_blocks += ticket.blocks
        self._count_blocks()
        stats.requests_running += 1
        stats.prefills_total += 1
        stats.prompt_tokens_total += n_tokens
        stats.prefix_cache_queries_tokens += n_tokens
        stats.prefix_cache_hits_tokens += ticket.cached
        self._hit_window.append((ticket.cached, n_tokens))
        self._notify()

    def cache_computed(self, ticket: Ticket) -> None:
        """Cache (and pin) the full blocks of the ticket's prompt computed so far.

        vLLM caches a request's full blocks step by step as its chunked prefill goes, so a
        request admitted while a long prompt is still being prefilled reuses what is done.
        """
        if ticket.cache_generation != self.cache.generation:
            return
        done = min(len(ticket.hashes), ticket.computed // self.config.block_size)
        if done <= ticket.held:
            return
        self.cache.acquire(ticket.hashes[ticket.held : done])
        shared = done - ticket.held  # these blocks now live in the cache, not privately
        ticket.held = done
        ticket.blocks -= shared
        self._private_blocks -= shared
        self._count_blocks()

    def complete_prefill(self, ticket: Ticket) -> None:
        """The prompt is computed: cache (and pin) its full blocks; the first token exists."""
        ticket.computed = ticket.prompt_tokens
        self.cache_computed(ticket)
        free = self.zero_latency or self.decode_free
        ticket.generated = ticket.max_tokens if free else 1
        self.wake(ticket)

    def _count_blocks(self) -> None:
        """KV blocks in use: distinct cached blocks held by running requests, plus the rest."""
        self.stats.active_blocks = self.cache.pinned + self._private_blocks

    def wake(self, ticket: Ticket) -> None:
        """Resolve the ticket's pending wait, if any."""
        waiter = ticket.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def record_step(self, record: StepRecord, wall_s: float) -> None:
        """Account one scheduler step (`wall_s`: its scaled duration)."""
        stats = self.stats
        stats.steps_total += 1
        stats.step_seconds_total += record.duration_s
        if record.prefill_tokens:
            stats.prefill_busy_seconds += wall_s
        self.recent_steps.append(record)
        self._notify()

    # ---- admin and observation --------------------------------------------------------------
    def reset_cache(self, *, restart: bool) -> None:
        """Drop the prefix cache; a restart also bumps the epoch and the start time."""
        self.cache.clear()
        self._count_blocks()
        self._hit_window.clear()
        if restart:
            self.stats.epoch += 1
            self.started_at = round(max(time.time(), self.started_at + 0.01), 2)
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
