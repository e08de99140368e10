"""Schedulers of the simulated engine: vLLM-like batched steps, and the legacy FIFO model."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from gateway.sim.state import StepRecord, Ticket, TicketState

if TYPE_CHECKING:
    from gateway.sim.engine import SimEngine

_MAX_LAG_S = 0.05  # how far behind its clock the step loop may catch up


class Scheduler(Protocol):
    """When prompt tokens get computed and output tokens produced."""

    async def prefill(self, ticket: Ticket) -> int:
        """Queue, admit and prefill a ticket; returns its cached prompt tokens."""
        ...

    async def decode(self, ticket: Ticket, produced: int) -> int:
        """Wait for more than `produced` output tokens; returns how many exist."""
        ...

    async def finish(self, ticket: Ticket, produced: int) -> None:
        """Wait until every output token exists."""
        ...

    def discard(self, ticket: Ticket) -> None:
        """Forget a closed ticket at once."""
        ...


async def _wait(ticket: Ticket) -> None:
    loop = asyncio.get_running_loop()
    ticket.waiter = loop.create_future()
    try:
        await ticket.waiter
    finally:
        ticket.waiter = None


class BatchScheduler:
    """vLLM v1-style continuous batching with chunked prefill, one step loop per backend.

    Each step: every running request that has its prompt computed decodes one token; running
    requests still prefilling, then waiting ones (FIFO, while `max_num_seqs` and the free KV
    blocks allow), get prompt chunks from what is left of `max_num_batched_tokens`. The step
    lasts prefill_tokens * prefill_s_per_token plus, when it decodes, decode_delay_s * (1 +
    decode_batch_slowdown * (batch - 1)), batch being the sequences in the step. A request's
    first token exists at the end of the step that completes its prompt.
    """

    def __init__(self, engine: SimEngine) -> None:
        self.engine = engine
        self.waiting: deque[Ticket] = deque()
        self.running: list[Ticket] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def prefill(self, ticket: Ticket) -> int:
        """Queue a ticket and wait for its first token."""
        self._ensure_loop()
        self.engine.enqueue(ticket)
        self.waiting.append(ticket)
        while ticket.generated == 0:
            await _wait(ticket)
        return ticket.cached

    async def decode(self, ticket: Ticket, produced: int) -> int:
        """Wait for the next step that gives this ticket a token."""
        while ticket.generated <= produced and ticket.generated < ticket.max_tokens:
            await _wait(ticket)
        return ticket.generated

    async def finish(self, ticket: Ticket, produced: int) -> None:
        """Wait for the ticket's last token."""
        while ticket.generated < ticket.max_tokens:
            await _wait(ticket)

    def discard(self, ticket: Ticket) -> None:
        """Drop a ticket from the queues."""
        with contextlib.suppress(ValueError):
            self.waiting.remove(ticket)
        with contextlib.suppress(ValueError):
            self.running.remove(ticket)

    def _ensure_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop: the old one's work is gone
            self.waiting.clear()
            self.running.clear()
            self._loop = loop
            self._task = None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        engine = self.engine
        scale = engine.config.time_scale
        loop = asyncio.get_running_loop()
        clock = loop.time()  # when the current step ends, in the loop's time
        try:
            while self.waiting or self.running:
                record, decodes, chunks = self._plan()
                if record.batch == 0:
                    break
                wall = record.duration_s * scale
                now = loop.time()
                # Steps follow each other on a clock of their own, so the time spent planning
                # and streaming does not add up; after a pause (or a long stall) it restarts.
                clock = (clock if now - clock < _MAX_LAG_S else now) + wall
                await asyncio.sleep(max(0.0, clock - now))
                engine.record_step(record, wall)
                self._complete(decodes, chunks)
        except BaseException as exc:
            for ticket in (*self.waiting, *self.running):  # nobody may wait for a dead loop
                if ticket.waiter is not None and not ticket.waiter.done():
                    ticket.waiter.set_exception(RuntimeError(f"scheduler stopped: {exc!r}"))
            self.waiting.clear()
            self.running.clear()
            raise

    def _plan(self) -> tuple[StepRecord, list[Ticket], list[tuple[Ticket, int]]]:
        engine, config = self.engine, self.engine.config
        budget = config.max_num_batched_tokens
        decodes: list[Ticket] = []
        chunks: list[tuple[Ticket, int]] = []
        for ticket in self.running:
            if budget <= 0:
                break
            if ticket.prefilled:
                decodes.append(ticket)
                budget -= 1
            else:
                n = min(ticket.prompt_tokens - ticket.computed, budget)
                chunks.append((ticket, n))
                budget -= n
        admitted = engine.stats.requests_running
        while self.waiting and budget > 0:
            ticket = self.waiting[0]
            busy = bool(decodes or chunks)
            if busy and (admitted >= config.max_num_seqs or not engine.fits(ticket)):
                break
            self.waiting.popleft()
            engine.admit(ticket)
            admitted += 1
            self.running.append(ticket)
            n = min(ticket.prompt_tokens - ticket.computed, budget)
            chunks.append((ticket, n))
            budget -= n
        prefill_tokens = sum(n for _, n in chunks)
        batch = len(decodes) + len(chunks)
        duration = prefill_tokens / config.prefill_tokens_per_s
        if decodes:
            slowdown = 1.0 + config.decode_batch_slowdown * (batch - 1)
            duration += config.decode_s_per_token * slowdown
        record = StepRecord(
            prefill_tokens, len(decodes), batch, duration, tuple((t.rid, n) for t, n in chunks)
        )
        return record, decodes, chunks

    def _complete(self, decodes: list[Ticket], chunks: list[tuple[Ticket, int]]) -> None:
        engine = self.engine
        running = TicketState.RUNNING
        for ticket, n in chunks:
            if ticket.state is not running:
                continue
            ticket.computed += n
            if ticket.prefilled:
                engine.complete_prefill(ticket)
            else:
                engine.cache_computed(ticket)
        for ticket in decodes:
            if ticket.state is running:
                ticket.generated += 1
                engine.wake(ticket)
        self.running = [
            t for t in self.running if t.state is running and t.generated < t.max_tokens
        ]


class FifoScheduler:
    """The legacy model: one prefill at a time in arrival order, decodes free of each other."""

    def __init__(self, engine: SimEngine) -> None:
        self.engine = engine
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def prefill(self, ticket: Ticket) -> int:
        """Wait for the prefill lock, then prefill the uncached part."""
        engine = self.engine
        engine.enqueue(ticket)
        lock = self._get_lock()
        await lock.acquire()
        try:
            engine.admit(ticket)
            started = time.monotonic()
            try:
                await asyncio.sleep(
                    (ticket.prompt_tokens - ticket.cached) * engine.prefill_s_per_token
                )
            finally:
                engine.stats.prefill_busy_seconds += time.monotonic() - started
            engine.complete_prefill(ticket)
        finally:
            lock.release()
        return ticket.cached

    async def decode(self, ticket: Ticket, produced: int) -> int:
        """One decode delay per token."""
        await asyncio.sleep(self.engine.decode_delay_s)
        ticket.generated = min(ticket.max_tokens, max(ticket.generated, produced + 1))
        return ticket.generated

    async def finish(self, ticket: Ticket, produced: int) -> None:
        """One decode delay per remaining token, in one sleep."""
        await asyncio.sleep((ticket.max_tokens - produced) * self.engine.decode_delay_s)
        ticket.generated = ticket.max_tokens

    def discard(self, ticket: Ticket) -> None:
        """Nothing to forget: a cancelled waiter leaves the lock's queue by itself."""

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock
