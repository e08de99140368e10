"""Scorers: cache affinity, load, and estimated completion time or TTFT, each in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from gateway.fleet.registry import Backend
from gateway.routing.types import RouteRequest

# Floor for estimated prefill seconds, so tiny prompts on idle backends don't divide by ~0.
MIN_TTFT_S = 0.001


def backend_load(backend: Backend) -> float:
    """Requests on a backend: the gateway's own and others' it heard of, or the engine's count
    when it reports more."""
    state = backend.state
    local = state.in_flight + state.exchanged_in_flight
    engine = state.engine
    if engine is None:
        return local
    return max(local, engine.running + engine.waiting)


def prefill_s(request: RouteRequest, backend: Backend) -> float:
    """Seconds `backend` needs to prefill what it does not hold of the request."""
    speed = backend.calibration.prefill_tokens_per_s(request.model)
    return request.uncached_tokens(backend) / speed


def queue_wait_s(request: RouteRequest, backend: Backend) -> float:
    """Seconds of prefill ahead of a request sent now.

    The gateway's own books know the work it sent. What other replicas and workers sent
    comes from their own books through the load exchange, and from the engine's `waiting`
    gauge: waiting requests beyond what the gateway had there when the gauge was read are
    charged at the typical prefill this backend has seen (the larger of the two counts).
    """
    state = backend.state
    now = request.now
    return state.prefill.wait_s(now) + state.foreign_prefill_s(now, state.prefill.typical_s)


def expected_output_tokens(request: RouteRequest, backend: Backend) -> float:
    """Output tokens to expect: what this model's answers ran to, capped by `max_tokens`."""
    learned = backend.calibration.output_tokens(request.model)
    cap = request.output_tokens
    if cap is None:
        return learned.value
    return min(cap, learned.value) if learned.learned else cap


def decode_s(request: RouteRequest, backend: Backend, output_tokens: float) -> float:
    """Seconds to stream `output_tokens` on `backend`, slowed by the batch it decodes with.

    The batch is the requests running there that will still be decoding while this one is:
    each counts in proportion to how much of this request's output its remaining work
    overlaps (the gateway's books of tokens still owed, scaled up by the requests other
    replicas sent there, as the engine's gauges or the load exchange count them).
    """
    state = backend.state
    calibration = backend.calibration
    others = float(state.in_flight)
    ahead = state.decode_tokens_owed(request.now, calibration.itl_s(request.model, others))
    foreign = state.foreign_requests()
    if foreign > 0:
        seen = others + foreign
        ahead = ahead * seen / others if others else seen * output_tokens
        others = seen
    overlap = min(others, ahead / max(output_tokens, 1.0))
    return output_tokens * calibration.itl_s(request.model, 1.0 + overlap)


def estimated_ttft_s(request: RouteRequest, backend: Backend) -> float:
    """Queued prefill ahead of the request plus its own uncached prefill, in seconds."""
    return max(MIN_TTFT_S, queue_wait_s(request, backend) + prefill_s(request, backend))


def estimated_completion_s(request: RouteRequest, backend: Backend) -> float:
    """Time to first token plus the decode of the expected output at this backend's batch."""
    tokens = expected_output_tokens(request, backend)
    return estimated_ttft_s(request, backend) + decode_s(request, backend, tokens)


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
    """Estimated completion time (or time to first token): affinity, load, speed in seconds.

    Score = fastest estimate ÷ this estimate, so the fastest backend scores 1 and one twice
    as slow scores 0.5. `miss_penalty` charges recomputing what another backend already holds
    a little extra: the copy displaces other cached prefixes and its work delays the requests
    that come after, costs the request's own TTFT does not show. With `objective` "completion"
    the decode of the expected output at each backend's running batch is counted too, so
    piling a hot prefix onto one backend stops paying once its batch streams too slowly.
    """

    name = "cost"

    def __init__(
        self, miss_penalty: float = 0.0, objective: Literal["completion", "ttft"] = "completion"
    ) -> None:
        self._miss_penalty = miss_penalty
        self._estimate = estimated_completion_s if objective == "completion" else estimated_ttft_s

    def score(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[float]:
        """Relative speed to completion (or to the first token)."""
        estimates = [self._estimate(request, b) for b in candidates]
        if self._miss_penalty and request.matches:
            held = max(request.matches.values())
            for i, backend in enumerate(candidates):
                lost = held - request.matched_blocks(backend)
                if lost > 0:
                    tokens = lost * request.block_tokens(backend)
                    speed = backend.calibration.prefill_tokens_per_s(request.model)
                    estimates[i] += self._miss_penalty * tokens / speed
        best = min(estimates, default=MIN_TTFT_S)
        return [best / estimate for estimate in estimates]
