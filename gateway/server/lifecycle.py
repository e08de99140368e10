"""Readiness and draining: the requests in flight, and ending those a drain outlives."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

Task = asyncio.Task[None]


@dataclass
class Lifecycle:
    """Shared by the app and the server: the draining flag and the requests in flight.

    Entering and leaving cost a set operation each; the idle event exists only while a drain
    waits for it.
    """

    draining: bool = False
    in_flight: set[Task] = field(default_factory=set)
    aborted: set[Task] = field(default_factory=set)
    _idle: asyncio.Event | None = None

    def enter(self) -> Task:
        """Count the current task's request as in flight; returns its ticket (the task)."""
        task: Task = asyncio.current_task()  # type: ignore[assignment]
        self.in_flight.add(task)
        return task

    def leave(self, task: Task) -> None:
        """The request is over."""
        self.in_flight.discard(task)
        self.aborted.discard(task)
        if not self.in_flight and self._idle is not None:
            self._idle.set()

    def was_aborted(self, task: Task) -> bool:
        """Whether a drain ended this request."""
        return task in self.aborted

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight, at most `timeout_s`; True if none is left."""
        if not self.in_flight:
            return True
        if self._idle is None or self._idle.is_set():
            self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def abort_all(self) -> int:
        """End every request still in flight (each answers 503 or an in-band error)."""
        count = 0
        for task in list(self.in_flight - self.aborted):
            self.aborted.add(task)
            task.cancel()
            count += 1
        return count
