"""The cache-location index interface shared by the memory and Redis implementations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from gateway.prefix.staleness import StalenessModel


class IndexState(StrEnum):
    """Whether the index answers lookups (OK) or routing runs load-only (DEGRADED)."""

    OK = "ok"
    DEGRADED = "degraded"


@dataclass(slots=True)
class IndexCounters:
    """Monotonic counters a metrics collector reads (the index never creates collectors)."""

    lookups: int = 0
    lookup_errors: int = 0
    lookups_skipped: int = 0
    records: int = 0
    record_errors: int = 0
    records_dropped: int = 0
    truncates: int = 0
    forgets: int = 0
    timeouts: int = 0
    error_replies: int = 0
    degraded_transitions: int = 0
    recoveries: int = 0
    sync_errors: int = 0


@runtime_checkable
class PrefixIndex(Protocol):
    """Where prefix chains are believed to be cached, by backend.

    ``hashes`` are a chain from ``gateway.prefix.hashing.prefix_hashes``: they are already seeded
    by model and salt, so ``model`` only scopes the call and is not part of any key.
    """

    @property
    def state(self) -> IndexState:
        """OK, or DEGRADED while lookups return {} (routing is load-only)."""
        ...

    @property
    def healthy(self) -> bool:
        """True when ``state`` is OK."""
        ...

    @property
    def counters(self) -> IndexCounters:
        """Live counters (the same object each time)."""
        ...

    async def lookup(self, model: str, hashes: Sequence[int]) -> dict[str, int]:
        """Leading blocks of ``hashes`` each backend is believed to hold (zeros omitted)."""
        ...

    async def record(self, model: str, backend_id: str, hashes: Sequence[int]) -> None:
        """The request was routed to ``backend_id``, which will hold this chain. Never raises."""
        ...

    async def forget(self, backend_id: str) -> None:
        """Drop everything about a backend (it restarted: a new epoch)."""
        ...

    async def truncate(
        self, model: str, backend_id: str, hashes: Sequence[int], keep_blocks: int
    ) -> None:
        """The backend holds only ``keep_blocks`` leading blocks: drop ``hashes[keep_blocks:]``."""
        ...

    @property
    def staleness(self) -> StalenessModel:
        """The staleness model: residency, epochs, and trust learned from reported hits."""
        ...

    def configure_backends(self, capacities: Mapping[str, int]) -> None:
        """Set the whole fleet: backend id → cache capacity in index blocks (others dropped)."""
        ...

    async def start(self) -> None:
        """Start background work."""
        ...

    async def close(self) -> None:
        """Stop background work and release connections."""
        ...
