"""The data a routing decision reads and returns; no I/O, no clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.fleet.registry import Backend


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the router knows about a request: its model, size, prefix matches, and the time.

    `group_in_flight` counts requests in flight whose prompt starts with the same block as this
    one (the same system prompt, tools or shared document): how popular its prefix is right now.
    """

    model: str
    prompt_tokens: float
    total_blocks: int
    block_tokens: float
    matches: Mapping[str, int] = field(default_factory=dict)
    now: float = 0.0
    group_in_flight: int = 0

    def matched_blocks(self, backend: Backend) -> int:
        """Leading prefix blocks the index believes `backend` holds."""
        return self.matches.get(backend.id, 0)

    def uncached_tokens(self, backend: Backend) -> float:
        """Prompt tokens `backend` would have to prefill."""
        cached = self.matched_blocks(backend) * self.block_tokens
        return max(1.0, self.prompt_tokens - cached)


@dataclass(slots=True)
class Decision:
    """The ranked backends (best first, the rest for failover) and why."""

    ranked: list[Backend]
    policy: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def explain(self) -> str:
        """A compact one-line account: `backend:total(scorer=value,...)` best first."""
        parts = []
        for backend in self.ranked:
            detail = self.scores.get(backend.id)
            if detail is None:
                parts.append(backend.id)
                continue
            total = detail.get("total", 0.0)
            inner = ",".join(f"{k}={v:.3f}" for k, v in detail.items() if k != "total")
            parts.append(f"{backend.id}:{total:.3f}({inner})")
        return f"{self.policy} " + " ".join(parts)


class Router(Protocol):
    """Ranks the backends serving a request's model."""

    name: str

    def decide(self, request: RouteRequest, candidates: Sequence[Backend]) -> Decision:
        """Return a decision whose ranked list is non-empty when candidates is."""
        ...


class Filter(Protocol):
    """Drops candidates that must not take the request."""

    name: str

    def keep(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[Backend]:
        """The candidates that may take the request."""
        ...


class Scorer(Protocol):
    """Scores every candidate in [0, 1], higher is better."""

    name: str

    def score(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[float]:
        """One score per candidate, in the candidates' order."""
        ...
