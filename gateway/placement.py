"""Placement: hash the prompt, ask the index, let the router rank, then keep the books.

The one awaited step before a decision (the index lookup) happens here, so `routing/` stays
free of I/O; the per-request `Placement` follows each attempt to keep load and cache state true.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.admission.tokens import PromptCounter
from gateway.api.request import InferenceRequest
from gateway.fleet.registry import Backend
from gateway.metrics import GatewayMetrics
from gateway.prefix.hashing import PrefixKey, prefix_hashes
from gateway.prefix.index import PrefixIndex
from gateway.proxy.forward import ProxyOutcome
from gateway.proxy.usage import Usage
from gateway.routing.scorers import expected_output_tokens, prefill_s
from gateway.routing.types import Decision, Router, RouteRequest
from gateway.settings import HashingSettings
from gateway.tasks import BackgroundTasks

log = logging.getLogger("gateway.routing")


class Placement:
    """One request's decision, and its bookkeeping across attempts (an AttemptObserver)."""

    __slots__ = (
        "_batch_at_first_byte",
        "_decode_tokens",
        "_first_byte_at",
        "_placer",
        "_prefill_began",
        "_queued",
        "_recording",
        "_settle_timer",
        "_settled",
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
        self._first_byte_at: float | None = None
        self._recording: asyncio.Task[Any] | None = None
        self._settle_timer: asyncio.TimerHandle | None = None
        self._settled = False
        self._ticket = -1
        self._queued = False
        self._prefill_began: float | None = None
        self._decode_tokens = 0.0
        self._batch_at_first_byte = 0.0

    def attempt_started(self, backend: Backend) -> None:
        """Count the request on `backend` and teach the index where its prefix now lives."""
        state = backend.state
        now = time.monotonic()
        # Others' requests waiting there would make this one's prefill look slow.
        self._queued = state.others_waiting(now)
        self._prefill_began = None
        self._first_byte_at = None
        self._settled = False
        state.in_flight += 1
        work_s = prefill_s(self.route, backend)
        self._ticket = state.prefill.push(work_s, now)
        self._decode_tokens = expected_output_tokens(self.route, backend)
        state.decode_tokens_ahead += self._decode_tokens
        if not self.request.stream:
            # A whole response arrives after the decode too: settle the prefill when the
            # books say it is done rather than when the body has come back.
            due = state.prefill.wait_s(now)
            loop = asyncio.get_running_loop()
            self._settle_timer = loop.call_later(due, self._settle, backend)
        self._placer.groups.started(self.key)
        if self.key.hashes:
            self._recording = self._placer.record(self.request.model, backend, self.key.hashes)

    def first_byte(self, backend: Backend) -> None:
        """The backend started answering: its prefill for this request is over."""
        if self._first_byte_at is None:
            now = time.monotonic()
            self._first_byte_at = now
            self._batch_at_first_byte = running_batch(backend)
            state = backend.state
            self._prefill_began = state.prefill.head_since(self._ticket)
            state.decoding += 1
            state.decoding_since_sum += now
            self._settle(backend)

    def _settle(self, backend: Backend) -> None:
        self._cancel_timer()
        if not self._settled:
            self._settled = True
            backend.state.prefill.done(self._ticket, time.monotonic())

    def _cancel_timer(self) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None

    def attempt_ended(self, backend: Backend) -> None:
        """The attempt is over: release what it held; undo the record if it never started."""
        state = backend.state
        state.in_flight -= 1
        state.decode_tokens_ahead = max(0.0, state.decode_tokens_ahead - self._decode_tokens)
        if self._first_byte_at is not None:
            state.decoding -= 1
            state.decoding_since_sum -= self._first_byte_at
            if state.decoding == 0:
                state.decoding_since_sum = 0.0  # no drift from float sums
        self._placer.groups.ended(self.key)
        self._cancel_timer()
        if not self._settled:
            self._settled = True
            state.prefill.cancel(self._ticket, time.monotonic())
        if self._first_byte_at is None and self.key.hashes:
            self._placer.unrecord(self, backend, self._recording)

    def finished(self, outcome: ProxyOutcome) -> None:
        """Learn from the usage the backend reported: token ratio, speeds, cache hit."""
        backend = outcome.backend
        if backend is None or outcome.status != 200 or outcome.usage is None:
            return
        usage = outcome.usage_counts()
        if usage is None or usage.prompt_tokens is None:
            return
        model = self.request.model
        calibration = backend.calibration
        calibration.observe_prompt(model, self.key.rendered_bytes, usage.prompt_tokens)
        if self.request.stream and self._first_byte_at is not None:
            self._observe_speeds(backend, usage)
        if usage.cached_tokens is not None and self.key.hashes:
            self._placer.correct(self, backend, usage.cached_tokens, usage.prompt_tokens)

    def _observe_speeds(self, backend: Backend, usage: Usage) -> None:
        assert self._first_byte_at is not None
        calibration = backend.calibration
        model = self.request.model
        began = self._prefill_began
        if began is not None and not self._queued and usage.cached_tokens is not None:
            uncached = usage.prompt_tokens - usage.cached_tokens if usage.prompt_tokens else 0
            calibration.observe_prefill(model, uncached, self._first_byte_at - began)
        if usage.completion_tokens is not None:
            batch = (self._batch_at_first_byte + running_batch(backend)) / 2
            seconds = time.monotonic() - self._first_byte_at
            calibration.observe_decode(model, usage.completion_tokens, seconds, batch)


def running_batch(backend: Backend) -> float:
    """Requests decoding on `backend` as far as anyone knows (the gateway's and the other
    replicas' books, or the engine's)."""
    state = backend.state
    engine = state.engine
    own = max(1.0, state.in_flight + state.exchanged_in_flight)
    return max(own, engine.running) if engine is not None else own


# Prefix depths (in blocks) at which popularity is counted: every block near the start, then
# sparser, about 50 for a full 512-block chain. A private part (a conversation's own history
# past a shared system prompt) a quarter as long as the shared prefix, or one block within
# the first 16, is told apart from it wherever the shared part happens to end.
CHECKPOINTS = (
    *range(0, 16),
    *range(16, 64, 4),
    *range(64, 256, 16),
    *range(256, 1024, 32),
)


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
        deepest = CHECKPOINTS[bisect.bisect_left(CHECKPOINTS, limit) - 1]
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


@dataclass(frozen=True, slots=True)
class PromptSize:
    """A request's prefix chain and, when it was counted, its prompt's exact tokens."""

    key: PrefixKey
    exact_tokens: int | None = None


class Placer:
    """Turns a validated request into a ranked decision; owns the index bookkeeping.

    With a `counter`, a prompt whose estimate is near a lane bound or a window is counted by
    its model's tokenizer (beside the index lookup), and routed, sized and reserved by that.
    """

    def __init__(
        self,
        hashing: HashingSettings,
        index: PrefixIndex,
        router: Router,
        metrics: GatewayMetrics,
        tasks: BackgroundTasks,
        tolerance: float = 0.15,
        counter: PromptCounter | None = None,
    ) -> None:
        self._hashing = hashing
        self.counter = counter
        self._tolerance = tolerance
        self._index = index
        self._router = router
        self._metrics = metrics
        self._tasks = tasks
        self.groups = PrefixGroups()
        self._decisions = metrics.decisions(router.name)

    def key(self, request: InferenceRequest) -> PrefixKey:
        """The request's prefix chain (and its rendered length)."""
        salt = request.data.get("cache_salt")
        return prefix_hashes(
            request.data,
            request.kind,
            request.model,
            salt if isinstance(salt, str) else None,
            self._hashing.block_bytes,
            self._hashing.max_blocks,
        )

    def _estimate(self, request: InferenceRequest, key: PrefixKey) -> RouteRequest:
        """What routing knows of the request before the index lookup: its size, estimated."""
        return RouteRequest(
            model=request.model,
            prompt_bytes=key.rendered_bytes,
            total_blocks=len(key.hashes),
            block_bytes=self._hashing.block_bytes,
            output_tokens=request.max_tokens,
        )

    def _counting(
        self, request: InferenceRequest, key: PrefixKey, candidates: Sequence[Backend]
    ) -> asyncio.Future[int | None] | None:
        """The exact count, started, when it could change the decision; else None."""
        counter = self.counter
        if counter is None or not counter.wanted(self._estimate(request, key), candidates):
            return None
        return asyncio.ensure_future(counter.count(request.model, request.kind, request.data))

    async def size(self, request: InferenceRequest, candidates: Sequence[Backend]) -> PromptSize:
        """Hash the prompt and, near a bound, count it: what reservations need before placing."""
        key = self.key(request)
        counting = self._counting(request, key, candidates)
        return PromptSize(key, await counting if counting is not None else None)

    async def place(
        self,
        request: InferenceRequest,
        candidates: Sequence[Backend],
        size: PromptSize | None = None,
        *,
        observe: bool = True,
    ) -> Placement:
        """Hash and count (unless `size` is the request's, from `size()`), look up, decide.

        `observe=False` (the admin explain view) leaves the decision metrics alone: a preview
        is not a routing decision. The index lookup it made is still counted, being one.
        """
        started = time.perf_counter()
        counting: asyncio.Future[int | None] | None = None
        if size is None:
            key = self.key(request)
            counting = self._counting(request, key, candidates)
            exact = None
        else:
            key, exact = size.key, size.exact_tokens
        try:
            matches = await self._index.lookup(request.model, key.hashes) if key.hashes else {}
            if counting is not None:
                exact = await counting
        finally:
            if counting is not None and not counting.done():
                counting.cancel()
        route = RouteRequest(
            model=request.model,
            prompt_bytes=key.rendered_bytes,
            total_blocks=len(key.hashes),
            block_bytes=self._hashing.block_bytes,
            matches=matches,
            now=time.monotonic(),
            group_in_flight=self.groups.in_flight(key, max(matches.values(), default=0)),
            output_tokens=request.max_tokens,
            exact_prompt_tokens=exact,
        )
        decision = self._router.decide(route, candidates)
        if observe:
            chosen = decision.ranked[0].id if decision.ranked else None
            self._decisions.decided(
                time.perf_counter() - started, chosen, matches, self._index.healthy
            )
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

    def correct(
        self, placement: Placement, backend: Backend, reported_tokens: int, prompt_tokens: int
    ) -> None:
        """Compare predicted with reported cached tokens and teach the staleness model.

        The prediction is in the backend's calibrated tokens, cut as the engine cuts: never
        the prompt's last token, whole engine blocks when the engine's block size is known.
        A shortfall beyond the relative tolerance means the backend had evicted part of the
        chain before this request. The chain itself needs no repair: the backend has just
        prefilled all of it again and it was recorded afresh when the request was sent. What
        was wrong is the belief about how long this backend keeps blocks, so its entries are
        made to age out sooner.
        """
        route = placement.route
        cut = max(0.0, prompt_tokens - 1.0)
        block = backend.calibration.engine_block_tokens

        def as_engine_counts(tokens: float) -> float:
            tokens = min(tokens, cut)
            return (tokens // block) * block if block else tokens

        # The check needs what the matched blocks prove the backend held; the prediction
        # reported beside the engine's figure is the expected value.
        known = as_engine_counts(route.cached_tokens(backend))
        predicted = as_engine_counts(route.expected_cached_tokens(backend))
        self._metrics.cached_tokens_predicted.labels(backend.id).inc(predicted)
        self._metrics.cached_tokens_reported.labels(backend.id).inc(reported_tokens)
        if route.matched_blocks(backend) == 0:
            return
        held = reported_tokens >= known * (1.0 - self._tolerance)
        self._index.staleness.observe_prediction(backend.id, held)
        if not held:
            self._metrics.index_corrections.labels(backend.id).inc()
