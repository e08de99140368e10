"""Background probing of every backend: health, context window, engine load, restarts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson

from gateway.fleet.adapters.base import EngineCache, EngineLimits
from gateway.fleet.registry import Backend, EngineLoad, Fleet
from gateway.proxy.upstream import UpstreamBroken, UpstreamClient, UpstreamUnavailable
from gateway.settings import HealthSettings

log = logging.getLogger("gateway.fleet")

BackendListener = Callable[[Backend], None]
_PROBE_ERRORS = (UpstreamUnavailable, UpstreamBroken, TimeoutError)


class FleetPoller:
    """Probes health on one interval and scrapes engine load gauges on a shorter one.

    `client` should be a small pool of its own: probes that queue behind traffic for a
    connection would time out exactly when a backend is busiest. A backend whose lifetime
    counters went backwards, or whose engine reports a later start time, has restarted with
    an empty cache: `on_restart` lets the index forget it. Coming back after being down is
    not a restart by itself (a network blip leaves the cache warm). What the engine says of
    its KV cache is learned here too; `on_capacity_change` lets the index resize.
    """

    def __init__(
        self,
        fleet: Fleet,
        client: UpstreamClient,
        settings: HealthSettings,
        *,
        on_health_change: BackendListener | None = None,
        on_restart: BackendListener | None = None,
        on_capacity_change: BackendListener | None = None,
        after_load_poll: Callable[[], None] | None = None,
        discover_cache: bool = True,
    ) -> None:
        self._fleet = fleet
        self._client = client
        self._settings = settings
        self._on_health_change = on_health_change
        self._on_restart = on_restart
        self._on_capacity_change = on_capacity_change
        self._after_load_poll = after_load_poll
        self._discover_cache = discover_cache
        self._lifetime: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._cache_known: set[str] = set()
        self._info_read: set[str] = set()  # the engine's info document, once per start
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start both polling loops in the background."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._every(self._settings.interval_s, self.poll_health)),
                asyncio.create_task(self._every(self._settings.load_interval_s, self.poll_load)),
            ]

    async def close(self) -> None:
        """Stop polling."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def poll_health(self) -> None:
        """Probe every backend's health once, concurrently."""
        await asyncio.gather(*(self._probe_health(b) for b in self._fleet.backends))

    async def poll_load(self) -> None:
        """Scrape every backend's engine metrics once, concurrently."""
        await asyncio.gather(
            *(self._scrape_load(b) for b in self._fleet.backends if b.adapter.metrics_path)
        )
        if self._after_load_poll is not None:
            self._after_load_poll()

    async def _every(self, interval_s: float, poll: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            result = poll()
            if asyncio.iscoroutine(result):
                await result

    async def _get(self, backend: Backend, path: str) -> tuple[int, bytes]:
        async with asyncio.timeout(self._settings.timeout_s):
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

    async def _probe_health(self, backend: Backend) -> None:
        try:
            status, _ = await self._get(backend, backend.adapter.health_path)
            ok = status == 200
        except TimeoutError:
            if backend.state.in_flight > 0:
                return  # busy, not down: its traffic is the better witness
            ok = False
        except (UpstreamUnavailable, UpstreamBroken):
            ok = False
        if ok and backend.state.learned_max_context is None:
            await self._learn_context(backend)
        if ok and backend.id not in self._info_read and backend.adapter.info_path:
            await self._learn_info(backend)
        self._update_health(backend, ok)

    async def _learn_info(self, backend: Backend) -> None:
        path = backend.adapter.info_path
        assert path is not None
        try:
            status, body = await self._get(backend, path)
            if status == 200:
                info = orjson.loads(body)
                self._learn_cache(backend, backend.adapter.parse_info(info))
                self._learn_limits(backend, backend.adapter.parse_limits(info))
                self._info_read.add(backend.id)
        except (*_PROBE_ERRORS, orjson.JSONDecodeError):
            return

    def _learn_limits(self, backend: Backend, limits: EngineLimits | None) -> None:
        if limits is None:
            return
        state = backend.state
        if limits.max_context is not None:
            state.learned_max_context = limits.max_context
        if limits.max_concurrency != state.learned_max_concurrency:
            state.learned_max_concurrency = limits.max_concurrency
            log.info("backend %s takes %s requests at once", backend.id, limits.max_concurrency)

    def _learn_cache(self, backend: Backend, cache: EngineCache | None) -> None:
        if cache is None or cache.capacity_tokens is None or not self._discover_cache:
            return
        self._cache_known.add(backend.id)
        if backend.calibration.learn_engine_cache(cache.capacity_tokens, cache.block_tokens):
            log.info(
                "backend %s reports a KV cache of %s tokens", backend.id, cache.capacity_tokens
            )
            if self._on_capacity_change is not None:
                self._on_capacity_change(backend)

    async def _learn_context(self, backend: Backend) -> None:
        try:
            status, body = await self._get(backend, "/v1/models")
            if status == 200:
                backend.state.learned_max_context = max_model_len(body)
        except (*_PROBE_ERRORS, orjson.JSONDecodeError):
            return

    async def _scrape_load(self, backend: Backend) -> None:
        path = backend.adapter.metrics_path
        assert path is not None
        try:
            status, body = await self._get(backend, path)
        except _PROBE_ERRORS:
            backend.state.engine = None
            return
        text = body.decode("utf-8", "replace") if status == 200 else ""
        sample = backend.adapter.parse_load(text) if text else None
        if sample is None:
            backend.state.engine = None
            return
        state = backend.state
        state.engine = EngineLoad(
            sample.running,
            sample.waiting,
            sample.kv_usage,
            time.monotonic(),
            own_in_flight=state.in_flight,
            own_prefilling=len(state.prefill),
        )
        if backend.id not in self._cache_known:
            self._learn_cache(backend, backend.adapter.parse_cache(text))
        # Both are read on every scrape (a restart usually shows in both at once), then it
        # counts once.
        counters_back = self._went_back(self._lifetime, backend, sample.lifetime_counter)
        started_later = self._went_back(self._started_at, backend, _negated(sample.started_at))
        if counters_back or started_later:
            why = "its engine reports a later start time" if started_later else ""
            self._restarted(backend, why or "its counters went backwards")

    @staticmethod
    def _went_back(seen: dict[str, float], backend: Backend, value: float | None) -> bool:
        if value is None:
            return False
        previous = seen.get(backend.id)
        seen[backend.id] = value
        return previous is not None and value < previous

    def _restarted(self, backend: Backend, why: str) -> None:
        log.warning("backend %s restarted (%s)", backend.id, why)
        self._cache_known.discard(backend.id)
        self._info_read.discard(backend.id)  # it may have restarted with other limits
        if self._on_restart is not None:
            self._on_restart(backend)

    def _update_health(self, backend: Backend, ok: bool) -> None:
        state = backend.state
        if ok:
            state.consecutive_failures = 0
            state.consecutive_successes += 1
            flip = (
                not state.healthy and state.consecutive_successes >= self._settings.successes_to_up
            )
        else:
            state.consecutive_successes = 0
            state.consecutive_failures += 1
            flip = state.healthy and state.consecutive_failures >= self._settings.failures_to_down
        if not flip:
            return
        state.healthy = not state.healthy
        log.warning("backend %s is now %s", backend.id, "up" if state.healthy else "down")
        if self._on_health_change is not None:
            self._on_health_change(backend)
        if state.healthy and not _tells_restarts(backend):
            # Nothing else can tell: a backend that was down may have lost its cache.
            self._restarted(backend, "it came back and its engine reports no start time")


def _tells_restarts(backend: Backend) -> bool:
    """Whether the engine's metrics show restarts (counters or a start time)."""
    adapter = backend.adapter
    return adapter.metrics_path is not None and bool(
        adapter.lifetime_counters or adapter.start_time_metrics
    )


def _negated(value: float | None) -> float | None:
    """A start time as a counter that goes backwards when the engine restarts."""
    return None if value is None else -value


def max_model_len(body: bytes) -> int | None:
    """The largest `max_model_len` in a `/v1/models` answer."""
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
