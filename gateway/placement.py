"""Placement: hash the prompt, ask the index, let the router rank, then keep the books.

The one awaited step before a decision (the index lookup) happens here, so `routing/` stays
free of I/O; the per-request `Placement` follows each attempt to keep load and cache state true.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from gateway.api.request import InferenceRequest
from gateway.fleet.registry import Backend
from gateway.metrics import GatewayMetrics
from gateway.prefix.hashing import PrefixKey, prefix_hashes
from gateway.prefix.index import PrefixIndex
from gateway.proxy.forward import ProxyOutcome
from gateway.proxy.usage import reported_cached_tokens
from gateway.routing.scorers import prefill_s
from gateway.routing.types import Decision, Router, RouteRequest
from gateway.settings import HashingSettings
from gateway.tasks import BackgroundTasks

log = logging.getLogger("gateway.routing")


class Placement:
    """One request's decision, and its bookkeeping across attempts (an AttemptObserver)."""

    __slots__ = (
        "_first_byte_seen",
        "_placer",
        "_recording",
        "_ticket",
        "decision",
        "key",
        "request",
        "route",
    )

    def __init__(
        self,
        placer: Placer,
        request: InferenceRequest,
        key: PrefixKey,
        route: RouteRequest,
        decision: Decision,
    ) -> None:
        self._placer = placer
        self.request = request
        self.key = key
        self.route = route
        self.decision = decision
        self._first_byte_seen = False
        self._recording: asyncio.Task[Any] | None = None
        self._ticket = -1

    def attempt_started(self, backend: Backend) -> None:
        """Count the request on `backend` and teach the index where its prefix now lives."""
        state = backend.state
        state.in_flight += 1
        self._ticket = state.prefill.push(prefill_s(self.route, backend), time.monotonic())
        self._placer.groups.started(self.key)
        self._first_byte_seen = False
        if self.key.hashes:
            self._recording = self._placer.record(self.request.model, backend, self.key.hashes)

    def first_byte(self, backend: Backend) -> None:
        """The backend's prefill for this request is over."""
        if not self._first_byte_seen:
            self._first_byte_seen = True
            backend.state.prefill.done(self._ticket, time.monotonic())

    def attempt_ended(self, backend: Backend) -> None:
        """The attempt is over: release what it held; undo the record if it never started."""
        backend.state.in_flight -= 1
        self._placer.groups.ended(self.key)
        if not self._first_byte_seen:
            self._first_byte_seen = True
            backend.state.prefill.cancel(self._ticket, time.monotonic())
            if self.key.hashes:
                self._placer.unrecord(self, backend, self._recording)

    def finished(self, outcome: ProxyOutcome) -> None:
        """Compare the cache hit the backend reported with the index's prediction."""
        backend = outcome.backend
        if backend is None or outcome.status != 200 or not self.key.hashes:
            return
        reported = reported_cached_tokens(
            outcome.tail_prev + outcome.tail, backend.settings.reports_cached_tokens
        )
        if reported is not None:
            self._placer.correct(self, backend, reported)


# Prefix depths (in blocks) at which popularity is counted: a few per request, not every block.
CHECKPOINTS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class PrefixGroups:
    """Requests in flight per prefix block, counted at checkpoint depths.

    How many requests in flight share a request's prefix *as deep as a backend holds it* tells
    a popular shared opening (a system prompt every new user sends) from a private history
    that happens to start with it (that user's next turn): the first is counted at a block all
    of them share, the second at a block of its own.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def in_flight(self, key: PrefixKey, depth: int) -> int:
        """Requests in flight sharing `key`'s prefix through its deepest checkpoint < `depth`."""
        hashes = key.hashes
        if not hashes:
            return 0
        limit = min(max(depth, 1), len(hashes))
        deepest = 0
        for checkpoint in CHECKPOINTS:
            if checkpoint >= limit:
                break
            deepest = checkpoint
        return self._counts.get(hashes[deepest], 0)

    def started(self, key: PrefixKey) -> None:
        """One more request with this prefix is in flight."""
        self._add(key, 1)

    def ended(self, key: PrefixKey) -> None:
        """One request with this prefix is no longer in flight."""
        self._add(key, -1)

    def _add(self, key: PrefixKey, delta: int) -> None:
        counts = self._counts
        hashes = key.hashes
        for checkpoint in CHECKPOINTS:
            if checkpoint >= len(hashes):
                break
            block = hashes[checkpoint]
            count = counts.get(block, 0) + delta
            if count > 0:
                counts[block] = count
            else:
                counts.pop(block, None)


class Placer:
    """Turns a validated request into a ranked decision; owns the index bookkeeping."""

    def __init__(
        self,
        hashing: HashingSettings,
        index: PrefixIndex,
        router: Router,
        metrics: GatewayMetrics,
        tasks: BackgroundTasks,
    ) -> None:
        self._hashing = hashing
        self._block_tokens = hashing.block_bytes / hashing.bytes_per_token
        self._index = index
        self._router = router
        self._metrics = metrics
        self._tasks = tasks
        self.groups = PrefixGroups()
        self._decision_time = metrics.routing_decision.labels(router.name)

    async def place(self, request: InferenceRequest, candidates: Sequence[Backend]) -> Placement:
        """Hash, look up, decide."""
        started = time.perf_counter()
        salt = request.data.get("cache_salt")
        key = prefix_hashes(
            request.data,
            request.kind,
            request.model,
            salt if isinstance(salt, str) else None,
            self._hashing.block_bytes,
            self._hashing.max_blocks,
        )
        matches = await self._index.lookup(request.model, key.hashes) if key.hashes else {}
        route = RouteRequest(
            model=request.model,
            prompt_tokens=key.rendered_bytes / self._hashing.bytes_per_token,
            total_blocks=len(key.hashes),
            block_tokens=self._block_tokens,
            matches=matches,
            now=time.monotonic(),
            group_in_flight=self.groups.in_flight(key, max(matches.values(), default=0)),
        )
        decision = self._router.decide(route, candidates)
        self._decision_time.observe(time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("route %s %s", request.request_id.decode(), decision.explain())
        return Placement(self, request, key, route, decision)

    def record(self, model: str, backend: Backend, hashes: list[int]) -> asyncio.Task[Any] | None:
        """Record off the request path."""
        return self._tasks.spawn(self._index.record(model, backend.id, hashes))

    def unrecord(
        self, placement: Placement, backend: Backend, recording: asyncio.Task[Any] | None
    ) -> None:
        """A failed attempt: the backend holds no more of the chain than it did before."""
        self._tasks.spawn(self._undo_record(placement, backend, recording))

    async def _undo_record(
        self, placement: Placement, backend: Backend, recording: asyncio.Task[Any] | None
    ) -> None:
        if recording is not None:
            # The undo must land after the record it undoes.
            await asyncio.wait([recording])
        route = placement.route
        await self._index.truncate(
            route.model, backend.id, placement.key.hashes, route.matched_blocks(backend)
        )

    def correct(self, placement: Placement, backend: Backend, reported_tokens: int) -> None:
        """Compare predicted with reported cached tokens and teach the staleness model.

        A shortfall means the backend had evicted part of the chain before this request.
        The chain itself needs no repair: the backend has just prefilled all of it again and
        it was recorded afresh when the request was sent. What was wrong is the belief about
        how long this backend keeps blocks, so its entries are made to age out sooner.
        """
        route = placement.route
        predicted_blocks = route.matched_blocks(backend)
        self._metrics.cached_tokens_predicted.labels(backend.id).inc(
            min(route.prompt_tokens, predicted_blocks * route.block_tokens)
        )
        self._metrics.cached_tokens_reported.labels(backend.id).inc(reported_tokens)
        if predicted_blocks == 0:
            return
        # Engines count whole engine blocks and our token estimate is approximate: allow one
        # block of slack before deciding the backend had lost part of the chain.
        held = int(reported_tokens / route.block_tokens) + 1 >= predicted_blocks
        self._index.staleness.observe_prediction(backend.id, held)
        if not held:
            self._metrics.index_corrections.labels(backend.id).inc()
