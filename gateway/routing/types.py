"""The data a routing decision reads and returns; no I/O, no clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.fleet.registry import Backend


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the router knows about a request: its model, size, prefix matches, and the time.

    Sizes are in bytes of the rendered prompt; each backend's learned bytes per token turns
    them into that backend's tokens. `output_tokens` is the client's `max_tokens`, if any.
    `group_in_flight` counts requests in flight that share this one's prefix as deep as the
    best holder has it (the same system prompt, tools or shared document, or only this
    conversation's history): how popular the cached part of its prefix is right now.
    `exact_prompt_tokens` is the prompt counted by its model's tokenizer, when it was counted
    (near a lane bound or a window); it then replaces every backend's estimate.
    """

    model: str
    prompt_bytes: float
    total_blocks: int
    block_bytes: int
    matches: Mapping[str, int] = field(default_factory=dict)
    now: float = 0.0
    group_in_flight: int = 0
    output_tokens: float | None = None
    exact_prompt_tokens: int | None = None

    def matched_blocks(self, backend: Backend) -> int:
        """Leading prefix blocks the index believes `backend` holds."""
        return self.matches.get(backend.id, 0)

    def bytes_per_token(self, backend: Backend) -> float:
        """`backend`'s rendered bytes per token for this model (learned, else configured)."""
        return backend.calibration.bytes_per_token(self.model)

    def prompt_tokens(self, backend: Backend) -> float:
        """The prompt's length in `backend`'s tokens (counted, else estimated)."""
        if self.exact_prompt_tokens is not None:
            return float(self.exact_prompt_tokens)
        return max(1.0, self.prompt_bytes / self.bytes_per_token(backend))

    def block_tokens(self, backend: Backend) -> float:
        """One prefix block in `backend`'s tokens."""
        return self.block_bytes / self.bytes_per_token(backend)

    def cached_tokens(self, backend: Backend) -> float:
        """Prompt tokens the index believes `backend` holds."""
        held = self.matched_blocks(backend) * self.block_bytes
        return min(held, self.prompt_bytes) / self.bytes_per_token(backend)

    def expected_cached_tokens(self, backend: Backend) -> float:
        """Prompt tokens `backend` is expected to hold: the matched blocks, plus half of the
        next block's bytes. The prompt it held shared some unknown part of that block (the
        index sees only whole blocks), and an engine caches every shared token it can: with
        few tokens per engine block, counting only matched blocks undershoots by half a block
        on average."""
        held = self.matched_blocks(backend) * self.block_bytes
        if held == 0:
            return 0.0
        beyond = min(self.block_bytes, max(0, self.prompt_bytes - held))
        return min(held + beyond / 2, self.prompt_bytes) / self.bytes_per_token(backend)

    def uncached_tokens(self, backend: Backend) -> float:
        """Prompt tokens `backend` would have to prefill."""
        return max(1.0, self.prompt_tokens(backend) - self.cached_tokens(backend))


@dataclass(slots=True)
class ScoreSheet:
    """Each scorer's values for the scored candidates, kept raw: read only when explaining."""

    candidates: Sequence[Backend]
    columns: list[tuple[str, list[float]]]
    totals: list[float]

    def by_backend(self) -> dict[str, dict[str, float]]:
        """backend id → {scorer: value, ..., "total": weighted sum}."""
        table: dict[str, dict[str, float]] = {}
        for i, backend in enumerate(self.candidates):
            row = {name: values[i] for name, values in self.columns}
            row["total"] = self.totals[i]
            table[backend.id] = row
        return table


@dataclass(slots=True)
class Decision:
    """The ranked backends (best first, the rest for failover) and why."""

    ranked: list[Backend]
    policy: str
    sheet: ScoreSheet | None = None
    elapsed_s: float = 0.0

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """Per backend, each scorer's value and the weighted total (empty for baselines)."""
        return self.sheet.by_backend() if self.sheet is not None else {}

    def explain(self) -> str:
        """A compact one-line account: `backend:total(scorer=value,...)` best first."""
        parts = []
        scores = self.scores
        for backend in self.ranked:
            detail = scores.get(backend.id)
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
