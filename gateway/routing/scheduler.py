"""The profile scheduler: filters, then weighted scorers, then the best-first ranking."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from gateway.fleet.registry import Backend
from gateway.routing.filters import BoundedLoadFilter, BreakerFilter, HealthFilter, ModelFilter
from gateway.routing.scorers import AffinityScorer, CostScorer, LoadScorer
from gateway.routing.types import Decision, Filter, RouteRequest, Scorer, ScoreSheet
from gateway.settings import FilterName, ProfileSettings, ScorerName


def _filter(name: FilterName, settings: ProfileSettings) -> Filter:
    if name == "bounded_load":
        return BoundedLoadFilter(settings.load_bound, settings.load_slack, settings.popular_shares)
    filters: dict[str, Filter] = {"model": ModelFilter(), "health": HealthFilter()}
    return filters[name]


def _scorer(name: ScorerName, settings: ProfileSettings) -> Scorer:
    scorers: dict[str, Scorer] = {
        "cost": CostScorer(settings.miss_penalty, settings.objective),
        "affinity": AffinityScorer(),
        "load": LoadScorer(),
    }
    return scorers[name]


NEAR_TIE = 0.03  # relative to the best total: a cold request's near-ties between replicas


def rank_by_total(
    candidates: Sequence[Backend],
    totals: Sequence[float],
    rng: random.Random,
    near_tie: float = 0.0,
) -> list[Backend]:
    """Candidates by descending total; equal totals by their tie order, then at random.

    With other replicas heard of (tie orders set), totals within `near_tie` of the best count
    as equal too: replicas placing cold requests decide on nearly the same view, and each
    taking its own order among near-equals keeps them from piling onto one backend between
    two exchanges.
    """
    keys = totals
    if near_tie and any(b.state.tie_order for b in candidates):
        best = max(totals)
        near = best - near_tie * abs(best)
        keys = [best if total >= near else total for total in totals]
    order = sorted(
        range(len(candidates)),
        key=lambda i: (-keys[i], candidates[i].state.tie_order, rng.random()),
    )
    return [candidates[i] for i in order]


class ProfileRouter:
    """A routing profile as declared in the config."""

    def __init__(
        self,
        name: str,
        filters: Sequence[Filter],
        scorers: Sequence[tuple[Scorer, float]],
        rng: random.Random,
    ) -> None:
        self.name = f"profile:{name}"
        self._filters = list(filters)
        self._scorers = [(s, w) for s, w in scorers if w > 0]
        self._rng = rng

    @classmethod
    def from_settings(
        cls, name: str, settings: ProfileSettings, rng: random.Random
    ) -> ProfileRouter:
        """Build the profile's plugins."""
        # The breaker filter is not optional: a backend whose circuit is open takes no traffic.
        return cls(
            name,
            [BreakerFilter(), *(_filter(f, settings) for f in settings.filters)],
            [(_scorer(s, settings), w) for s, w in settings.scorers.items()],
            rng,
        )

    def decide(self, request: RouteRequest, candidates: Sequence[Backend]) -> Decision:
        """Filter, score, weight, rank."""
        started = time.perf_counter()
        kept: Sequence[Backend] = candidates
        for plugin in self._filters:
            kept = plugin.keep(request, kept)
        totals = [0.0] * len(kept)
        columns: list[tuple[str, list[float]]] = []
        for scorer, weight in self._scorers:
            values = [min(1.0, max(0.0, v)) for v in scorer.score(request, kept)]
            for i, value in enumerate(values):
                totals[i] += weight * value
            columns.append((scorer.name, values))
        # A prefix some backend holds is a reason to choose, not noise: near-ties only for
        # requests no backend has cached any of.
        near_tie = 0.0 if request.matches else NEAR_TIE
        ranked = rank_by_total(kept, totals, self._rng, near_tie)
        sheet = ScoreSheet(kept, columns, totals)
        return Decision(ranked, self.name, sheet, time.perf_counter() - started)
