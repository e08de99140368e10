"""What the admin API shows: each backend's live state, and how a request would be routed."""

from __future__ import annotations

import math
import time
from typing import Any, Protocol, runtime_checkable

import orjson

from gateway.admission.keys import Principal
from gateway.api.request import BodyLimits, InferenceRequest, RequestKind, parse_request
from gateway.deps import Deps
from gateway.errors import GatewayError
from gateway.fleet.registry import Backend
from gateway.placement import Placement
from gateway.prefix.staleness import StalenessModel
from gateway.routing.filters import LaneFilter, Unroutable

EXPLAIN_REQUEST_ID = b"admin-explain"


@runtime_checkable
class CountsEntries(Protocol):
    """An index that can say cheaply how many blocks it holds for a backend (memory)."""

    def entries(self, backend_id: str) -> int:
        """Blocks held for the backend."""
        ...


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def calibration_view(backend: Backend) -> dict[str, Any]:
    """Per model: bytes per token, prefill speed, decode latency and its batch slope, as
    configured and as in use now (learned, or pooled from the fleet)."""
    calibration = backend.calibration
    defaults = calibration.defaults
    models = {}
    for model in backend.settings.models:
        lone = calibration.itl_s(model, 1.0)
        models[model] = {
            "bytes_per_token": {
                "configured": defaults.bytes_per_token,
                "in_use": calibration.bytes_per_token(model),
            },
            "prefill_tokens_per_s": {
                "configured": defaults.prefill_tokens_per_s,
                "in_use": calibration.prefill_tokens_per_s(model),
            },
            "decode_s_per_token": {"configured": defaults.itl_s, "in_use": lone},
            "decode_batch_slope": {
                "configured": defaults.itl_batch_slope,
                "in_use": calibration.itl_s(model, 2.0) / lone - 1.0 if lone > 0 else None,
            },
        }
    return models


def load_view(backend: Backend, now: float) -> dict[str, Any]:
    """Requests in flight (this process's and the other replicas'), prefill queued in this
    process's books, and the engine's own gauges as last polled."""
    state = backend.state
    engine = state.engine
    return {
        "in_flight": state.in_flight,
        "other_replicas_in_flight": state.exchanged_in_flight,
        "decoding": state.decoding,
        "prefill_queued_s": state.prefill.wait_s(now),
        "max_concurrency": backend.settings.max_concurrency,
        "engine": None
        if engine is None
        else {
            "running": engine.running,
            "waiting": engine.waiting,
            "kv_usage": engine.kv_usage,
            "polled_s_ago": max(0.0, now - engine.sampled_at),
        },
    }


def index_view(deps: Deps, backend_id: str) -> dict[str, Any] | None:
    """What the index keeps for the backend: capacity in blocks, the residency the staleness
    model estimates, the trust reported hits left it, and (memory index) blocks held."""
    staleness: StalenessModel = deps.index.staleness
    if not staleness.tracks(backend_id):
        return None
    view: dict[str, Any] = {
        "capacity_blocks": staleness.capacity(backend_id),
        "residency_s": _finite(staleness.residency_s(backend_id)),
        "trust": staleness.trust(backend_id),
    }
    if isinstance(deps.index, CountsEntries):
        view["entries"] = deps.index.entries(backend_id)
    return view


def backend_view(deps: Deps, backend: Backend, now: float) -> dict[str, Any]:
    """One backend as the admin API shows it."""
    state = backend.state
    breaker = state.breaker
    settings = backend.settings
    calibration = backend.calibration
    return {
        "id": backend.id,
        "url": settings.base_url,
        "engine": settings.engine,
        "models": list(settings.models),
        "pool": settings.pool,
        "accelerator": settings.accelerator,
        "healthy": state.healthy,
        "breaker": {
            "state": breaker.state(now).value,
            "opened": breaker.opened,
            "retry_after_s": breaker.retry_after_s(now),
        },
        "max_context": backend.max_context,
        "load": load_view(backend, now),
        "calibration": calibration_view(backend),
        "kv_capacity": {
            "configured_tokens": calibration.defaults.kv_cache_tokens,
            "engine_tokens": calibration.engine_kv_tokens,
            "engine_block_tokens": calibration.engine_block_tokens,
            "in_use_tokens": calibration.kv_cache_tokens,
        },
        "index": index_view(deps, backend.id),
    }


def backends_view(deps: Deps, drained: frozenset[str]) -> dict[str, Any]:
    """Every routed backend, the drained ones' ids, and the index's own state."""
    now = time.monotonic()
    return {
        "backends": [backend_view(deps, b, now) for b in deps.fleet.backends],
        "drained": sorted(drained),
        "index": {
            "kind": deps.settings.index.kind,
            "state": deps.index.state.value,
            "share_counted": isinstance(deps.index, CountsEntries),
        },
    }


def request_kind(asked: str | None, body: bytes) -> RequestKind:
    """`chat` or `completion`: as asked, else by the body (an object with `messages` is chat;
    a body that is not JSON gets the chat route's 400)."""
    if asked is not None:
        if asked not in ("chat", "completion"):
            raise GatewayError(
                400, "`kind` must be `chat` or `completion`.", param="kind", code="invalid_kind"
            )
        return "chat" if asked == "chat" else "completion"
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "chat"
    return "completion" if isinstance(data, dict) and "prompt" in data else "chat"


def _refusal(error: GatewayError) -> dict[str, Any]:
    return {"status": error.status, "code": error.code, "message": error.message}


async def explain(
    deps: Deps, kind: RequestKind, body: bytes, principal: Principal
) -> dict[str, Any]:
    """How `body` would be routed now, without sending it or taking any tenant's limits.

    A body the inference route would reject is the same 400 here; a refusal routing would
    give (no backend for the tier or lane, a context too long) is reported in `refused`.
    """
    server = deps.settings.server
    limits = BodyLimits(server.max_json_depth, server.max_messages)
    request = parse_request(kind, body, EXPLAIN_REQUEST_ID, limits)
    tier = deps.gate.tier(principal, request.data)
    view: dict[str, Any] = {
        "kind": kind,
        "model": request.model,
        "tenant": principal.tenant,
        "tier": tier.name,
        "lane": None,
        "limits": None,
        "refused": None,
    }
    serving = deps.fleet.serving(request.model)
    if not serving:
        view["refused"] = {"status": 404, "code": "model_not_found", "message": request.model}
        return view
    limits_of = deps.gate.limits_of(principal.tenant, tier)
    view["limits"] = None if limits_of is None else limits_of.model_dump(exclude_none=True)
    try:
        candidates = tier.pools.keep_backends(serving)
    except Unroutable as refused:
        view["refused"] = {
            "status": refused.status,
            "code": refused.code,
            "message": refused.message,
        }
        return view
    try:
        placement = await deps.placer.place(request, candidates, observe=False)
    except GatewayError as error:
        view["refused"] = _refusal(error)
        return view
    view["lane"] = _lane(deps, placement, candidates)
    view.update(_decision_view(deps, request, placement, serving, candidates, tier.settings.rank))
    return view


def _lane(deps: Deps, placement: Placement, candidates: list[Backend]) -> str | None:
    admission = deps.settings.admission
    if not admission.lanes or not candidates:
        return None
    lanes = LaneFilter(admission.lanes, float(admission.default_output_tokens))
    return lanes.lane_of(placement.route, candidates).name


def _decision_view(
    deps: Deps,
    request: InferenceRequest,
    placement: Placement,
    serving: list[Backend],
    candidates: list[Backend],
    rank: int,
) -> dict[str, Any]:
    decision = placement.decision
    route = placement.route
    ranked_ids = [b.id for b in decision.ranked]
    scores = decision.scores
    kept = {b.id for b in candidates}
    rows = []
    for backend in serving:
        rows.append(
            {
                "id": backend.id,
                "in_tier": backend.id in kept,
                "rank": ranked_ids.index(backend.id) + 1 if backend.id in ranked_ids else None,
                "matched_blocks": route.matched_blocks(backend),
                "prompt_tokens": route.prompt_tokens(backend),
                "cached_tokens": route.cached_tokens(backend),
                "scores": scores.get(backend.id),
            }
        )
    return {
        "policy": decision.policy,
        "chosen": ranked_ids[0] if ranked_ids else None,
        "ranked": ranked_ids,
        "prefix": {
            "rendered_bytes": placement.key.rendered_bytes,
            "blocks": route.total_blocks,
            "best_match_blocks": max(route.matches.values(), default=0),
            "in_flight_sharing_it": route.group_in_flight,
        },
        "candidates": rows,
        "would_queue": not deps.gate.queue.has_room(decision.ranked, rank),
        "explain": decision.explain(),
        "stream": request.stream,
    }
