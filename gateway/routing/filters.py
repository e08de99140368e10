"""Filters: which candidates may take a request (model, health; lanes and tiers join here)."""

from __future__ import annotations

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
