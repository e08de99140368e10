"""Fire-and-forget background work off the request path, bounded and drained on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("gateway.tasks")

CANCEL_ROUNDS = 50  # at most 5 s of re-cancelling tasks that swallowed a cancel
CANCEL_WAIT_S = 0.1


class BackgroundTasks:
    """Keeps references to spawned tasks; refuses new ones beyond a bound instead of piling up."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dropped = 0

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run `coro` in the background, or drop it (None) when too many are pending."""
        if len(self._tasks) >= self._limit:
            coro.close()
            self.dropped += 1
            return None
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %r", task.exception())

    @property
    def pending(self) -> int:
        """Tasks still running."""
        return len(self._tasks)

    async def settle(self, timeout_s: float = 5.0) -> bool:
        """Wait until nothing is pending (work spawned meanwhile included); False on timeout."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        return True

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Wait a little for pending work, then cancel what is left."""
        if not self._tasks:
            return
        _, still = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        cancelled = set(still)
        # A cancellation that lands inside the Redis client's own handling can be swallowed
        # there (seen with redis-py): cancel again until done, for a bounded time.
        for _ in range(CANCEL_ROUNDS):
            if not still:
                break
            for task in still:
                task.cancel()
            _, still = await asyncio.wait(still, timeout=CANCEL_WAIT_S)
        await asyncio.gather(*(cancelled - still), return_exceptions=True)
