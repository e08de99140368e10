"""The routing stage every policy goes through first: context windows, then lanes."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.errors import GatewayError
from gateway.fleet.registry import Backend
from gateway.routing.filters import LaneFilter, Unroutable, WindowFilter
from gateway.routing.types import Decision, Filter, Router, RouteRequest
from gateway.settings import AdmissionSettings


class StagedRouter:
    """Runs the admission filters, then the configured router over what they kept."""

    def __init__(self, inner: Router, filters: Sequence[Filter]) -> None:
        self.name = inner.name
        self._inner = inner
        self._filters = list(filters)

    @classmethod
    def from_settings(cls, inner: Router, settings: AdmissionSettings) -> StagedRouter:
        """Window filter always; the lane filter when lanes are configured."""
        default = float(settings.default_output_tokens)
        filters: list[Filter] = [WindowFilter(default)]
        if settings.lanes:
            filters.append(LaneFilter(settings.lanes, default))
        return cls(inner, filters)

    def decide(self, request: RouteRequest, candidates: Sequence[Backend]) -> Decision:
        """Filter (a filter may answer with an error), then let the inner router rank."""
        kept: Sequence[Backend] = candidates
        try:
            for plugin in self._filters:
                kept = plugin.keep(request, kept)
        except Unroutable as refused:
            raise refusal(refused) from None
        return self._inner.decide(request, kept)


def refusal(refused: Unroutable) -> GatewayError:
    """The client's answer when a filter left no backend (a 503 may be retried in a second)."""
    retry = 1 if refused.status == 503 else None
    return GatewayError(
        refused.status,
        refused.message,
        param=refused.param,
        code=refused.code,
        retry_after_s=retry,
    )
