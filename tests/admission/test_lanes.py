"""Context windows and lanes: the filters at each boundary, spill, the 400 and the 503s."""

from __future__ import annotations

import pytest

from gateway.routing.filters import (
    LaneFilter,
    PoolFilter,
    Unroutable,
    WindowFilter,
    context_tokens,
)
from gateway.settings import LaneSettings
from tests.unit.core.factories import make_backend, route

LANES = [
    LaneSettings(name="short", up_to_tokens=8000, pools=["short"], spill=["long"]),
    LaneSettings(name="long", pools=["long"]),
]


def ids(backends: object) -> list[str]:
    return [b.id for b in backends]  # type: ignore[attr-defined]


def test_context_is_prompt_estimate_plus_asked_or_default_output() -> None:
    b = make_backend("a")
    assert context_tokens(route(prompt_tokens=1000, output_tokens=50), b, 256) == 1050
    assert context_tokens(route(prompt_tokens=1000), b, 256) == 1256


def test_window_filter_drops_backends_too_small_at_the_boundary() -> None:
    small = make_backend("small", max_context=4096)
    big = make_backend("big", max_context=32768)
    unknown = make_backend("unknown")
    fits = route(prompt_tokens=4000, output_tokens=96)  # exactly 4096
    assert ids(WindowFilter(256).keep(fits, [small, big, unknown])) == ["small", "big", "unknown"]
    over = route(prompt_tokens=4000, output_tokens=97)
    assert ids(WindowFilter(256).keep(over, [small, big, unknown])) == ["big", "unknown"]


def test_window_filter_answers_400_naming_the_largest_window() -> None:
    small = make_backend("small", max_context=4096)
    mid = make_backend("mid", max_context=16384)
    with pytest.raises(Unroutable) as caught:
        WindowFilter(256).keep(route(prompt_tokens=20000, output_tokens=10), [small, mid])
    assert caught.value.status == 400
    assert caught.value.code == "context_length_exceeded"
    assert "16384" in caught.value.message
    assert caught.value.param == "messages"


def test_window_filter_names_max_tokens_when_the_output_alone_overflows() -> None:
    small = make_backend("small", max_context=2048)
    with pytest.raises(Unroutable) as caught:
        WindowFilter(256).keep(route(prompt_tokens=3, output_tokens=5000), [small])
    assert caught.value.param == "max_tokens"
    assert "max_tokens" in caught.value.message


def test_lane_boundary_picks_short_up_to_its_bound_and_long_past_it() -> None:
    short = make_backend("s", pool="short")
    long = make_backend("l", pool="long")
    lanes = LaneFilter(LANES, 256)
    at = route(prompt_tokens=7990, output_tokens=10)
    past = route(prompt_tokens=7991, output_tokens=10)
    assert ids(lanes.keep(at, [short, long])) == ["s"]
    assert ids(lanes.keep(past, [short, long])) == ["l"]


def test_short_spills_to_long_only_when_every_short_backend_is_full() -> None:
    s1 = make_backend("s1", pool="short", max_concurrency=2)
    s2 = make_backend("s2", pool="short", max_concurrency=2)
    long = make_backend("l", pool="long", max_concurrency=2)
    lanes = LaneFilter(LANES, 256)
    short_request = route(prompt_tokens=100, output_tokens=10)
    s1.state.in_flight = 2
    assert ids(lanes.keep(short_request, [s1, s2, long])) == ["s2"]
    s2.state.in_flight = 2
    assert ids(lanes.keep(short_request, [s1, s2, long])) == ["l"]
    long.state.in_flight = 2  # everything full: wait for the lane's own
    assert ids(lanes.keep(short_request, [s1, s2, long])) == ["s1", "s2"]


def test_long_never_spills_into_short() -> None:
    short = make_backend("s", pool="short")
    long = make_backend("l", pool="long", max_concurrency=1)
    long.state.in_flight = 1
    assert ids(LaneFilter(LANES, 256).keep(route(prompt_tokens=9000), [short, long])) == ["l"]


def test_lane_without_a_backend_is_a_503() -> None:
    only_short = make_backend("s", pool="short")
    with pytest.raises(Unroutable) as caught:
        LaneFilter(LANES, 256).keep(route(prompt_tokens=9000), [only_short])
    assert caught.value.status == 503
    assert caught.value.code == "no_backend_in_lane"


def test_pool_filter_keeps_a_tiers_pools_and_503s_when_none_serve() -> None:
    a = make_backend("a", pool="gpu")
    b = make_backend("b", pool="cpu")
    assert ids(PoolFilter(["gpu"], "interactive").keep_backends([a, b])) == ["a"]
    assert ids(PoolFilter(None, "standard").keep_backends([a, b])) == ["a", "b"]
    with pytest.raises(Unroutable) as caught:
        PoolFilter(["tpu"], "batch").keep_backends([a, b])
    assert caught.value.status == 503
    assert "batch" in caught.value.message
