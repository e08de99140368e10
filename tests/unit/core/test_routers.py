"""Routers: the profile scheduler, the baselines and the factory that builds them."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from gateway.fleet.registry import Backend, EngineLoad
from gateway.routing.baselines import LeastLoadedRouter, RoundRobinRouter, ThresholdRouter
from gateway.routing.factory import build_router
from gateway.routing.filters import HealthFilter, ModelFilter
from gateway.routing.scheduler import ProfileRouter, rank_by_total
from gateway.routing.scorers import AffinityScorer, LoadScorer
from gateway.routing.types import Decision, RouteRequest
from gateway.settings import ProfileSettings, RoutingSettings, ThresholdSettings
from tests.unit.core.factories import make_backend, route


def ids(decision: Decision) -> list[str]:
    return [b.id for b in decision.ranked]


def fleet(*names: str) -> list[Backend]:
    return [make_backend(name) for name in names]


# --- filters and ranking -----------------------------------------------------------------------


def test_model_filter_keeps_backends_serving_the_model() -> None:
    a, b = make_backend("a"), make_backend("b", models=["other"])
    assert ModelFilter().keep(route(), [a, b]) == [a]


def test_health_filter_drops_unhealthy_and_fails_open() -> None:
    a, b = fleet("a", "b")
    b.state.healthy = False
    assert HealthFilter().keep(route(), [a, b]) == [a]
    a.state.healthy = False
    assert HealthFilter().keep(route(), [a, b]) == [a, b]


def test_rank_by_total_orders_descending_and_breaks_ties_at_random() -> None:
    a, b, c = fleet("a", "b", "c")
    assert rank_by_total([a, b, c], [0.1, 0.9, 0.5], random.Random(0)) == [b, c, a]
    orders = {
        tuple(x.id for x in rank_by_total([a, b, c], [1.0, 1.0, 0.0], random.Random(seed)))
        for seed in range(40)
    }
    assert orders == {("a", "b", "c"), ("b", "a", "c")}


# --- ProfileRouter -----------------------------------------------------------------------------


def profile(scorers: dict[str, float], seed: int = 0, name: str = "p") -> ProfileRouter:
    settings = ProfileSettings(filters=["model", "health"], scorers=scorers)  # type: ignore[arg-type]
    return ProfileRouter.from_settings(name, settings, random.Random(seed))


def test_profile_ranks_by_weighted_total() -> None:
    a, b, c = fleet("a", "b", "c")
    a.state.in_flight = 3
    request = route(matches={"a": 100, "b": 50})
    decision = profile({"affinity": 1.0, "load": 1.0}).decide(request, [a, b, c])
    # a: 1.0 + 0.25, b: 0.5 + 1.0, c: 0.0 + 1.0
    assert ids(decision) == ["b", "a", "c"]
    assert decision.scores["a"] == {"affinity": 1.0, "load": 0.25, "total": 1.25}
    assert decision.scores["b"]["total"] == pytest.approx(1.5)
    assert decision.policy == "profile:p"


def test_profile_weights_change_the_winner() -> None:
    a, b = fleet("a", "b")
    a.state.in_flight = 3
    request = route(matches={"a": 100})
    assert ids(profile({"affinity": 1.0, "load": 1.0}).decide(request, [a, b]))[0] == "a"
    assert ids(profile({"affinity": 1.0, "load": 3.0}).decide(request, [a, b]))[0] == "b"


def test_profile_filters_model_and_health() -> None:
    a, b, c = make_backend("a"), make_backend("b", models=["other"]), make_backend("c")
    c.state.healthy = False
    decision = profile({"cost": 1.0}).decide(route(), [a, b, c])
    assert ids(decision) == ["a"]
    assert set(decision.scores) == {"a"}


def test_profile_with_no_backend_for_the_model_is_empty() -> None:
    decision = profile({"cost": 1.0}).decide(route(model="nope"), fleet("a", "b"))
    assert decision.ranked == []
    assert decision.scores == {}


def test_profile_skips_zero_weight_scorers() -> None:
    router = ProfileRouter(
        "z", [], [(AffinityScorer(), 0.0), (LoadScorer(), 2.0)], random.Random(0)
    )
    a, b = fleet("a", "b")
    a.state.in_flight = 1
    decision = router.decide(route(matches={"a": 100}), [a, b])
    assert ids(decision) == ["b", "a"]
    assert decision.scores["b"] == {"load": 1.0, "total": 2.0}


class WildScorer:
    """A misbehaving plugin scoring outside [0, 1]."""

    name = "wild"

    def score(self, request: RouteRequest, candidates: Sequence[Backend]) -> list[float]:
        return [5.0, -3.0][: len(candidates)]


def test_profile_clamps_scores_to_unit_interval() -> None:
    router = ProfileRouter("w", [], [(WildScorer(), 2.0)], random.Random(0))
    a, b = fleet("a", "b")
    decision = router.decide(route(), [a, b])
    assert decision.scores["a"] == {"wild": 1.0, "total": 2.0}
    assert decision.scores["b"] == {"wild": 0.0, "total": 0.0}


def test_profile_ties_are_broken_at_random() -> None:
    a, b = fleet("a", "b")
    firsts = {ids(profile({"load": 1.0}, seed=s).decide(route(), [a, b]))[0] for s in range(40)}
    assert firsts == {"a", "b"}


def test_explain_lists_backends_best_first_with_scores() -> None:
    a, b = fleet("a", "b")
    b.state.in_flight = 1
    decision = profile({"affinity": 1.0, "load": 1.0}, name="mix").decide(
        route(matches={"a": 50}), [a, b]
    )
    assert decision.explain() == (
        "profile:mix a:1.500(affinity=0.500,load=1.000) b:0.500(affinity=0.000,load=0.500)"
    )


def test_explain_without_scores_lists_ids() -> None:
    a, b = fleet("a", "b")
    assert Decision([b, a], "round_robin").explain() == "round_robin b a"


# --- RoundRobinRouter --------------------------------------------------------------------------


def test_round_robin_rotates() -> None:
    backends = fleet("a", "b", "c")
    router = RoundRobinRouter()
    seen = [ids(router.decide(route(), backends)) for _ in range(4)]
    assert seen == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_round_robin_skips_unhealthy() -> None:
    a, b, c = fleet("a", "b", "c")
    b.state.healthy = False
    router = RoundRobinRouter()
    firsts = [ids(router.decide(route(), [a, b, c])) for _ in range(3)]
    assert firsts == [["a", "c"], ["c", "a"], ["a", "c"]]


def test_round_robin_fails_open_when_none_is_healthy() -> None:
    backends = fleet("a", "b")
    for b in backends:
        b.state.healthy = False
    router = RoundRobinRouter()
    assert ids(router.decide(route(), backends)) == ["a", "b"]
    assert ids(router.decide(route(), backends)) == ["b", "a"]


def test_round_robin_with_no_candidates() -> None:
    decision = RoundRobinRouter().decide(route(), [])
    assert decision.ranked == []
    assert decision.policy == "round_robin"


# --- LeastLoadedRouter -------------------------------------------------------------------------


def test_least_loaded_ranks_by_load_including_engine_reports() -> None:
    a, b, c = fleet("a", "b", "c")
    a.state.in_flight = 1
    a.state.engine = EngineLoad(running=5, waiting=3, kv_usage=None, sampled_at=0.0)
    b.state.in_flight = 4
    c.state.in_flight = 2
    assert ids(LeastLoadedRouter(random.Random(0)).decide(route(), [a, b, c])) == ["c", "b", "a"]


def test_least_loaded_ignores_cache_and_skips_unhealthy() -> None:
    a, b, c = fleet("a", "b", "c")
    b.state.in_flight = 1
    c.state.healthy = False
    decision = LeastLoadedRouter(random.Random(0)).decide(route(matches={"b": 100}), [a, b, c])
    assert ids(decision) == ["a", "b"]


# --- ThresholdRouter ---------------------------------------------------------------------------


def threshold(**overrides: float) -> ThresholdRouter:
    return ThresholdRouter(ThresholdSettings(**overrides), random.Random(0))  # type: ignore[arg-type]


def holder_and_other(holder_load: int, other_load: int) -> list[Backend]:
    holder, other = fleet("holder", "other")
    holder.state.in_flight = holder_load
    other.state.in_flight = other_load
    return [holder, other]


FULL_MATCH = route(total_blocks=10, matches={"holder": 10})


@pytest.mark.parametrize(
    ("holder_load", "other_load", "first"),
    [
        (192, 128, "holder"),  # difference exactly 64: not above the absolute threshold
        (193, 128, "other"),  # 65 > 64 and 193 > 192: imbalanced
        (195, 130, "holder"),  # 195 is exactly 1.5 x 130: not above the relative threshold
        (196, 130, "other"),  # 66 > 64 and 196 > 195: imbalanced, least loaded wins
        (64, 0, "holder"),  # 64 - 0 is not above 64
        (65, 0, "other"),  # 65 > 64 and 65 > 0
        (1000, 700, "holder"),  # large gap but 1000 < 1050: not imbalanced
    ],
)
def test_threshold_imbalance_rule_boundaries(holder_load: int, other_load: int, first: str) -> None:
    backends = holder_and_other(holder_load, other_load)
    assert ids(threshold().decide(FULL_MATCH, backends))[0] == first


@pytest.mark.parametrize(
    ("matched", "first"),
    [(3, "other"), (4, "holder"), (0, "other"), (10, "holder")],
)
def test_threshold_cache_rule_needs_more_than_the_threshold(matched: int, first: str) -> None:
    # Balanced load, holder slightly busier: only a match ratio above 0.3 sends it to the holder.
    backends = holder_and_other(5, 0)
    request = route(total_blocks=10, matches={"holder": matched})
    assert ids(threshold().decide(request, backends)) == [first, *({"holder", "other"} - {first})]


def test_threshold_best_match_first_then_rest_by_load() -> None:
    a, b, c, d = fleet("a", "b", "c", "d")
    a.state.in_flight, b.state.in_flight, c.state.in_flight, d.state.in_flight = 9, 3, 1, 2
    request = route(total_blocks=10, matches={"a": 9, "b": 5})
    assert ids(threshold().decide(request, [a, b, c, d])) == ["a", "c", "d", "b"]


def test_threshold_without_blocks_goes_by_load() -> None:
    backends = holder_and_other(3, 1)
    request = route(total_blocks=0, matches={"holder": 5})
    assert ids(threshold().decide(request, backends)) == ["other", "holder"]


def test_threshold_settings_are_honoured() -> None:
    backends = holder_and_other(12, 5)
    router = threshold(balance_abs_threshold=4, balance_rel_threshold=2.0, cache_threshold=0.5)
    assert ids(router.decide(FULL_MATCH, backends))[0] == "other"  # 7 > 4 and 12 > 10
    backends[0].state.in_flight = 10  # 10 is not above 2 x 5
    assert ids(router.decide(FULL_MATCH, backends))[0] == "holder"
    half = route(total_blocks=10, matches={"holder": 5})
    assert ids(router.decide(half, backends))[0] == "other"  # 0.5 is not above 0.5


def test_threshold_uses_only_healthy_backends() -> None:
    holder, other = holder_and_other(0, 5)
    holder.state.healthy = False
    assert ids(threshold().decide(FULL_MATCH, [holder, other])) == ["other"]


def test_threshold_with_no_candidates() -> None:
    assert threshold().decide(FULL_MATCH, []).ranked == []


# --- build_router ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "cls", "name"),
    [
        ("round_robin", RoundRobinRouter, "round_robin"),
        ("least_loaded", LeastLoadedRouter, "least_loaded"),
        ("sglang_threshold", ThresholdRouter, "sglang_threshold"),
        ("profile", ProfileRouter, "profile:default"),
    ],
)
def test_build_router_for_each_policy(policy: str, cls: type, name: str) -> None:
    router = build_router(RoutingSettings(policy=policy), random.Random(0))  # type: ignore[arg-type]
    assert isinstance(router, cls)
    assert router.name == name
    assert router.decide(route(), fleet("a")).ranked[0].id == "a"


def test_build_router_uses_the_selected_profile() -> None:
    settings = RoutingSettings(
        policy="profile",
        profile="sticky",
        profiles={
            "default": ProfileSettings(scorers={"load": 1.0}),
            "sticky": ProfileSettings(filters=["model", "health"], scorers={"affinity": 1.0}),
        },
    )
    router = build_router(settings, random.Random(0))
    assert router.name == "profile:sticky"
    a, b = fleet("a", "b")
    a.state.in_flight = 50
    assert ids(router.decide(route(matches={"a": 100}), [a, b]))[0] == "a"


def test_build_router_passes_threshold_settings() -> None:
    settings = RoutingSettings(
        policy="sglang_threshold", threshold=ThresholdSettings(cache_threshold=0.95)
    )
    router = build_router(settings, random.Random(0))
    backends = holder_and_other(1, 0)
    request = route(total_blocks=10, matches={"holder": 9})
    assert ids(router.decide(request, backends))[0] == "other"


def test_build_router_without_rng() -> None:
    router = build_router(RoutingSettings(policy="least_loaded"))
    assert ids(router.decide(route(), fleet("a")))[0] == "a"


def test_bounded_load_passes_over_a_backend_above_its_share() -> None:
    from gateway.routing.filters import BoundedLoadFilter

    a, b, c = fleet("a", "b", "c")
    a.state.in_flight, b.state.in_flight, c.state.in_flight = 4, 1, 1
    popular = route(group_in_flight=6)  # every request in flight shares this prefix
    # bound = ceil(1.5 * (6 + 1) / 3) = 4, no slack: a (4) is at it, so it takes no more.
    assert ids_of(BoundedLoadFilter(1.5, 0).keep(popular, [a, b, c])) == ["b", "c"]
    a.state.in_flight = 2  # bound = ceil(1.5 * 5 / 3) = 3
    assert ids_of(BoundedLoadFilter(1.5, 0).keep(popular, [a, b, c])) == ["a", "b", "c"]
    a.state.in_flight = 5  # the slack lifts the bound to ceil(1.5 * 8 / 3) + 2 = 6
    assert ids_of(BoundedLoadFilter(1.5, 2).keep(popular, [a, b, c])) == ["a", "b", "c"]


def test_bounded_load_leaves_unpopular_prefixes_with_their_holder() -> None:
    from gateway.routing.filters import BoundedLoadFilter

    a, b, c = fleet("a", "b", "c")
    a.state.in_flight, b.state.in_flight, c.state.in_flight = 4, 1, 1
    # Two of six requests in flight share this prefix: less than one backend's fair share.
    private = route(group_in_flight=1)
    assert ids_of(BoundedLoadFilter(1.5, 0).keep(private, [a, b, c])) == ["a", "b", "c"]
    assert ids_of(BoundedLoadFilter(1.5, 0).keep(route(group_in_flight=2), [a, b, c])) == [
        "b",
        "c",
    ]


def test_bounded_load_keeps_everyone_when_alone_or_idle() -> None:
    from gateway.routing.filters import BoundedLoadFilter

    (a,) = fleet("a")
    a.state.in_flight = 100
    assert ids_of(BoundedLoadFilter(1.0, 0).keep(route(group_in_flight=100), [a])) == ["a"]
    a, b = fleet("a", "b")
    assert ids_of(BoundedLoadFilter(1.0, 0).keep(route(), [a, b])) == ["a", "b"]


def test_default_profile_sends_a_shared_prefix_elsewhere_once_its_holder_is_over_the_bound() -> (
    None
):
    router = build_router(RoutingSettings(policy="profile"), random.Random(0))
    a, b, c, d = fleet("a", "b", "c", "d")
    # Defaults: popular = at least 4 fair shares, i.e. the whole load of a 4-backend fleet;
    # bound = ceil(1.0 * (total + 1) / 4).
    a.state.in_flight = 0
    hot = dict(matches={"a": 90}, group_in_flight=1)
    assert ids(router.decide(route(**hot), [a, b, c, d]))[0] == "a"  # bound 1: a (0) is under
    a.state.in_flight = 1
    assert ids(router.decide(route(**hot), [a, b, c, d]))[0] != "a"  # bound 1: a is at it
    # The same load with a prefix only half the requests in flight share: a keeps it.
    b.state.in_flight = 1
    assert ids(router.decide(route(matches={"a": 90}, group_in_flight=1), [a, b, c, d]))[0] == "a"


def ids_of(backends) -> list[str]:
    return [b.id for b in backends]


@pytest.mark.parametrize(
    "router",
    [
        RoundRobinRouter(),
        LeastLoadedRouter(random.Random(0)),
        ThresholdRouter(ThresholdSettings(), random.Random(0)),
    ],
    ids=["round_robin", "least_loaded", "sglang_threshold"],
)
def test_baselines_pass_over_a_backend_whose_circuit_is_open(router: object) -> None:
    a, b = make_backend("a"), make_backend("b")
    breaker = a.state.breaker
    for _ in range(breaker.settings.consecutive_failures):
        breaker.record(breaker.admit(0.0), False, 0.0)
    assert not breaker.available(0.0)
    for _ in range(4):
        decision = router.decide(route(matches={"a": 100}), [a, b])  # type: ignore[attr-defined]
        assert [x.id for x in decision.ranked] == ["b"]
