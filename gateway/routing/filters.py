"""Filters: which candidates may take a request (model, health; lanes and tiers join here)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.fleet.registry import Backend
from gateway.routing.types import RouteRequest


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
