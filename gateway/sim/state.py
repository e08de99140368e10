"""Per-request and per-backend state of the simulated engine: tickets, counters, step records."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

Outcome = Literal["success", "error", "cancelled", "aborted"]


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
    active_blocks: int = 0  # KV blocks in use: shared prefix blocks once, plus private ones
    steps_total: int = 0
    step_seconds_total: float = 0.0
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
    """Per-request handle: scheduling progress and accounting; close() it exactly once."""

    __slots__ = (
        "blocks", "cache_generation", "cached", "computed", "generated", "hashes", "held",
        "max_tokens", "prompt_tokens", "rid", "state", "waiter",
    )  # fmt: skip

    def __init__(self, rid: int = 0) -> None:
        self.rid = rid
        self.state = TicketState.NEW
        self.blocks = 0  # KV blocks it uses outside the shared (pinned) prefix cache
        self.prompt_tokens = 0
        self.max_tokens = 1
        self.hashes: Sequence[int] = ()
        self.cached = 0  # prompt tokens found in the prefix cache at admission
        self.computed = 0  # prompt tokens computed so far (cached ones included)
        self.generated = 0  # output tokens produced so far
        self.held = 0  # leading blocks of `hashes` pinned in the cache
        self.cache_generation = 0
        self.waiter: asyncio.Future[None] | None = None

    @property
    def prefilled(self) -> bool:
        """True once the whole prompt has been computed."""
        return self.computed >= self.prompt_tokens


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One scheduler step: what it computed and how long it took (simulated seconds)."""

    prefill_tokens: int
    decodes: int
    batch: int
    duration_s: float
    chunks: tuple[tuple[int, int], ...]  # (ticket rid, prompt tokens computed), in order
