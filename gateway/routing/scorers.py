"""Scorers: cache affinity, load, and estimated time to first token, each in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.fleet.registry import Backend
from gateway.routing.types import RouteRequest

# Floor for estimated prefill seconds, so tiny prompts on idle backends don't divide by ~0.
MIN_TTFT_S = 0.001


def backend_load(backend: Backend) -> float:
    """Requests on a backend: the gateway's own count, or the engine's when it reports more."""
    local = float(backend.state.in_flight)
    engine = backend.state.engine
    if engine is None:
        return local
    return max(local, engine.running + engine.waiting)


def prefill_s(request: RouteRequest, backend: Backend) -> float:
    """Seconds `backend` needs to prefill what it does not hold of the request."""
    return request.uncached_tokens(backend) / backend.settings.prefill_tokens_per_s


def estimated_ttft_s(request: RouteRequest, backend: Backend) -> float:
    """Queued prefill ahead of the request plus its own uncached prefill, in seconds."""
    queued = backend.state.prefill.wait_s(request.now)
    return max(MIN_TTFT_S, queued + prefill_s(request, backend))


class AffinityScorer:
    """The fraction of the request's prefix blocks a backend already holds."""

    name = "affinity"

    def score(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[float]:
        """Matched ÷ total blocks (0 when the prompt has no full block)."""
        if request.total_blocks == 0:
            return [0.0] * len(candidates)
        return [min(1.0, request.matched_blocks(b) / request.total_blocks) for b in candidates]


class LoadScorer:
    """Less loaded is better: (least load + 1) ÷ (this load + 1)."""

    name = "load"

    def score(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[float]:
        """1 for the least loaded candidate, falling towards 0 with load."""
        loads = [backend_load(b) for b in candidates]
        least = min(loads, default=0.0)
        return [(least + 1.0) / (load + 1.0) for load in loads]


class CostScorer:
    """Estimated time to first token, which puts affinity, load and hardware speed in seconds.

    Score = fastest estimate ÷ this estimate, so the fastest backend scores 1 and one twice
    as slow scores 0.5. `miss_penalty` charges recomputing what another backend already holds
    a little extra: the copy displaces other cached prefixes and its work delays the requests
    that come after, costs the request's own TTFT does not show.
    """

    name = "cost"

    def __init__(self, miss_penalty: float = 0.0) -> None:
        self._miss_penalty = miss_penalty

    def score(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[float]:
        """Relative speed to first token."""
        estimates = [estimated_ttft_s(request, b) for b in candidates]
        if self._miss_penalty and request.matches:
            held = max(request.matches.values())
            for i, backend in enumerate(candidates):
                lost = held - request.matched_blocks(backend)
                if lost > 0:
                    seconds = lost * request.block_tokens / backend.settings.prefill_tokens_per_s
                    estimates[i] += self._miss_penalty * seconds
        best = min(estimates, default=MIN_TTFT_S)
        return [best / estimate for estimate in estimates]
