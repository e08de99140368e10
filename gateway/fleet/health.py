"""Background health probing of every backend, and learning their context windows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson

from gateway.fleet.registry import Backend, Fleet
from gateway.proxy.upstream import UpstreamBroken, UpstreamClient, UpstreamUnavailable
from gateway.settings import HealthSettings

log = logging.getLogger("gateway.health")

HealthListener = Callable[[Backend], None]


class HealthPoller:
    """Probes each backend's health endpoint on an interval and flips its `healthy` state."""

    def __init__(
        self,
        fleet: Fleet,
        client: UpstreamClient,
        settings: HealthSettings,
        on_change: HealthListener | None = None,
    ) -> None:
        self._fleet = fleet
        self._client = client
        self._settings = settings
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="health-poller")

    async def close(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def poll_once(self) -> None:
        """Probe every backend once, concurrently."""
        await asyncio.gather(*(self._probe(backend) for backend in self._fleet.backends))

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self._settings.interval_s)

    async def _get(self, backend: Backend, path: str) -> tuple[int, bytes]:
        response = await self._client.send(
            "GET",
            backend.settings.base_url + path,
            None,
            backend.auth_headers,
            timeout_s=self._settings.timeout_s,
        )
        try:
            return response.status, await response.read()
        finally:
            await response.aclose()

    async def _probe(self, backend: Backend) -> None:
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                status, _ = await self._get(backend, backend.adapter.health_path)
            ok = status == 200
        except (UpstreamUnavailable, UpstreamBroken, TimeoutError):
            ok = False
        if ok and backend.state.learned_max_context is None:
            await self._learn_context(backend)
        self._update(backend, ok)

    async def _learn_context(self, backend: Backend) -> None:
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                status, body = await self._get(backend, "/v1/models")
            if status == 200:
                backend.state.learned_max_context = _max_model_len(body)
        except (UpstreamUnavailable, UpstreamBroken, TimeoutError, orjson.JSONDecodeError):
            return

    def _update(self, backend: Backend, ok: bool) -> None:
        state = backend.state
        if ok:
            state.consecutive_failures = 0
            state.consecutive_successes += 1
            flip = not state.healthy and state.consecutive_successes >= self._settings.successes_to_up
        else:
            state.consecutive_successes = 0
            state.consecutive_failures += 1
            flip = state.healthy and state.consecutive_failures >= self._settings.failures_to_down
        if flip:
            state.healthy = not state.healthy
            log.warning("backend %s is now %s", backend.id, "up" if state.healthy else "down")
            if self._on_change is not None:
                self._on_change(backend)


def _max_model_len(body: bytes) -> int | None:
    data = orjson.loads(body)
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    lengths = [
        e["max_model_len"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("max_model_len"), int)
    ]
    return max(lengths) if lengths else None
