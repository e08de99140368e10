"""Filters: which candidates may take a request (model, health, load, window, lane, pool)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.fleet.registry import Backend
from gateway.routing.types import RouteRequest
from gateway.settings import LaneSettings


class ModelFilter:
    """Keeps backends that serve the request's model."""

    name = "model"

    def keep(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[Backend]:
        """Backends listing the model."""
        return [b for b in candidates if request.model in b.settings.models]


class HealthFilter:
    """Keeps healthy backends; fails open when none is, since probes can lag behind recovery."""

    name = "health"

    def keep(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[Backend]:
        """Healthy backends, or every candidate when none is healthy."""
        healthy = [b for b in candidates if b.state.healthy]
        return healthy or list(candidates)


class BreakerFilter:
    """Keeps backends whose circuit breaker would admit an attempt now.

    An open breaker takes its backend out until its cooldown ends; then the backend is back
    as a candidate until one request (its probe) is on its way. It fails closed: when every
    breaker is open, no backend is tried and the client gets a 503 with `Retry-After`.
    """

    name = "breaker"

    def keep(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[Backend]:
        """Backends whose breaker admits attempts (none when every one is open)."""
        now = request.now
        return [b for b in candidates if b.state.breaker.available(now)]


class BoundedLoadFilter:
    """Keeps backends under `factor` times the mean load plus `slack` (bounded-load hashing).

    Prefix affinity alone sends every request that shares a popular prefix (one system prompt
    in front of all traffic) to the first backend that cached it, and each user's later turns
    follow. A backend already carrying more than its bounded share of the requests in flight
    is passed over, so the next holder (or a new one) takes the request. The slack keeps
    the bound from biting at low load, where one or two requests in flight say nothing.

    It applies only to popular prefixes: a request whose cached prefix is shared by fewer than
    `popular_shares` backends' fair shares of the requests in flight (a private conversation,
    a document a few users ask about) cannot pile up anywhere by itself, and moving it would
    only throw its cache hit away.
    """

    name = "bounded_load"

    def __init__(self, factor: float, slack: int, popular_shares: float = 1.0) -> None:
        self._factor = factor
        self._slack = slack
        self._popular_shares = popular_shares

    def keep(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[Backend]:
        """Backends whose in-flight count is under the bound (all of them if none is)."""
        if len(candidates) < 2:
            return list(candidates)
        total = sum(b.state.in_flight for b in candidates)
        if request.group_in_flight * len(candidates) < self._popular_shares * total:
            return list(candidates)
        bound = math.ceil(self._factor * (total + 1) / len(candidates)) + self._slack
        kept = [b for b in candidates if b.state.in_flight < bound]
        return kept or list(candidates)


class Unroutable(Exception):
    """No candidate may take the request, for a reason the client must hear (status, code)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def context_tokens(request: RouteRequest, backend: Backend, default_output: float) -> float:
    """The request's estimated context on `backend`: prompt tokens plus the output asked for."""
    output = request.output_tokens if request.output_tokens is not None else default_output
    return request.prompt_tokens(backend) + output


def full(backend: Backend) -> bool:
    """Whether `backend` carries as many requests as it may take (every replica's count)."""
    state = backend.state
    return state.in_flight + state.exchanged_in_flight >= backend.max_concurrency


class WindowFilter:
    """Drops backends whose context window is too small for the request's estimated context.

    When that leaves none, the request can go nowhere: a 400 `context_length_exceeded` naming
    the largest window, before any backend is bothered. A backend of unknown window stays.
    """

    name = "window"

    def __init__(self, default_output_tokens: float) -> None:
        self._default_output = default_output_tokens

    def keep(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[Backend]:
        """Backends whose window holds the estimated context."""
        kept = []
        largest = 0
        needed = 0.0
        for backend in candidates:
            window = backend.max_context
            tokens = context_tokens(request, backend, self._default_output)
            if window is None or tokens <= window:
                kept.append(backend)
            elif window > largest:
                largest, needed = window, tokens
        if kept or not candidates:
            return kept
        # Output asked for that no window holds even without a prompt is the field to fix
        # (engines name `max_tokens` there too); otherwise the prompt is.
        output = request.output_tokens
        param = "max_tokens" if output is not None and output >= largest else "messages"
        basis = "prompt estimate" if request.exact_prompt_tokens is None else "prompt tokens"
        raise Unroutable(
            400,
            f"This model's maximum context length is {largest} tokens. However, you requested "
            f"about {math.ceil(needed)} tokens ({basis} plus max_tokens). Please reduce "
            "the length of the messages or completion.",
            "context_length_exceeded",
            param=param,
        )


class LaneFilter:
    """Keeps the pools of the request's lane, chosen by its estimated context.

    A lane's own pools first; when every one of their backends is full, its spill pools'
    backends that are not; when those are full too, the lane's own (the admission queue
    waits for them). A lane none of whose pools is among the candidates is a 503.
    """

    name = "lane"

    def __init__(self, lanes: Sequence[LaneSettings], default_output_tokens: float) -> None:
        self._lanes = list(lanes)
        self._default_output = default_output_tokens

    def lane_of(self, request: RouteRequest, candidates: Sequence[Backend]) -> LaneSettings:
        """The first lane whose bound holds the request (the largest estimate counts)."""
        tokens = max(context_tokens(request, b, self._default_output) for b in candidates)
        for lane in self._lanes:
            if lane.up_to_tokens is None or tokens <= lane.up_to_tokens:
                return lane
        return self._lanes[-1]

    def keep(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[Backend]:
        """The lane's backends, spilling over when they are all full."""
        if not self._lanes or not candidates:
            return list(candidates)
        lane = self.lane_of(request, candidates)
        own = [b for b in candidates if b.settings.pool in lane.pools]
        free = [b for b in own if not full(b)]
        if free:
            return free
        spill = [b for b in candidates if b.settings.pool in lane.spill and not full(b)]
        if spill:
            return spill
        if own:
            return own
        raise Unroutable(
            503,
            f"No backend of lane `{lane.name}` (pools {', '.join(lane.pools)}) can take "
            "this request.",
            "no_backend_in_lane",
        )


class PoolFilter:
    """Keeps backends in the given pools (a tier's); none of them there is a 503."""

    name = "pool"

    def __init__(self, pools: Sequence[str] | None, tier: str) -> None:
        self._pools = None if pools is None else frozenset(pools)
        self._tier = tier

    def keep_backends(self, candidates: Sequence[Backend]) -> list[Backend]:
        """`candidates` in the pools (all of them when no pools are set)."""
        if self._pools is None:
            return list(candidates)
        kept = [b for b in candidates if b.settings.pool in self._pools]
        if kept or not candidates:
            return kept
        raise Unroutable(
            503,
            f"No backend in the pools of tier `{self._tier}` ({', '.join(sorted(self._pools))}) "
            "serves this model.",
            "no_backend_for_tier",
        )
