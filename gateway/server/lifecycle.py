"""Readiness and draining: the requests in flight, and ending those a drain outlives."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Ticket:
    """One inference request in flight; `aborted` once a drain ends it."""

    task: asyncio.Task[None] | None
    aborted: bool = False


@dataclass
class Lifecycle:
    """Shared by the app and the server: draining flag, requests in flight, an idle event."""

    draining: bool = False
    in_flight: set[Ticket] = field(default_factory=set)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def enter(self) -> Ticket:
        """Count the current task's request as in flight."""
        ticket = Ticket(asyncio.current_task())
        self.in_flight.add(ticket)
        self._idle.clear()
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """The request is over."""
        self.in_flight.discard(ticket)
        if not self.in_flight:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight, at most `timeout_s`; True if none is left."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def abort_all(self) -> int:
        """End every request still in flight (each answers 503 or an in-band error)."""
        count = 0
        for ticket in list(self.in_flight):
            if not ticket.aborted and ticket.task is not None:
                ticket.aborted = True
                ticket.task.cancel()
                count += 1
        return count
