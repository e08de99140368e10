"""Scorers: cache affinity, load and estimated TTFT, each in [0, 1], higher is better."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.fleet.registry import EngineLoad, ExchangedLoad
from gateway.routing.scorers import (
    MIN_TTFT_S,
    AffinityScorer,
    CostScorer,
    LoadScorer,
    backend_load,
    decode_s,
    estimated_ttft_s,
    expected_output_tokens,
    queue_wait_s,
)
from tests.unit.core.factories import MODEL, make_backend, route

SCORERS = [AffinityScorer(), LoadScorer(), CostScorer()]


def engine(
    running: float, waiting: float, own_in_flight: int = 0, own_prefilling: int = 0
) -> EngineLoad:
    return EngineLoad(running, waiting, None, 0.0, own_in_flight, own_prefilling)


# --- load helpers ------------------------------------------------------------------------------


def test_backend_load_takes_the_larger_of_own_and_engine_counts() -> None:
    b = make_backend("a")
    b.state.in_flight = 3
    assert backend_load(b) == 3.0
    b.state.engine = engine(running=4, waiting=2)
    assert backend_load(b) == 6.0
    b.state.in_flight = 9
    assert backend_load(b) == 9.0


def test_queued_prefill_and_ttft_estimates() -> None:
    b = make_backend("a", prefill_tokens_per_s=1000.0)
    b.state.prefill.push(2.0, now=0.0)
    assert b.state.prefill.wait_s(0.0) == pytest.approx(2.0)
    # 6400 prompt tokens, 40 of 100 blocks of 64 cached: 3840 uncached tokens.
    assert estimated_ttft_s(route(matches={"a": 40}), b) == pytest.approx(2.0 + 3.84)


def test_ttft_estimate_has_a_floor() -> None:
    b = make_backend("a", prefill_tokens_per_s=1e9)
    assert estimated_ttft_s(route(prompt_tokens=1.0, total_blocks=0), b) == MIN_TTFT_S


def test_fully_cached_prompt_still_prefills_one_token() -> None:
    b = make_backend("a")
    assert route(matches={"a": 100}).uncached_tokens(b) == 1.0
    assert route(matches={"a": 500}).uncached_tokens(b) == 1.0


# --- affinity ----------------------------------------------------------------------------------


def test_affinity_is_the_matched_fraction() -> None:
    a, b, c = make_backend("a"), make_backend("b"), make_backend("c")
    scores = AffinityScorer().score(route(matches={"a": 100, "b": 25}), [a, b, c])
    assert scores == [1.0, 0.25, 0.0]


def test_affinity_without_full_blocks_is_zero() -> None:
    a = make_backend("a")
    assert AffinityScorer().score(route(total_blocks=0, matches={"a": 3}), [a]) == [0.0]


# --- load --------------------------------------------------------------------------------------


def test_load_score_prefers_the_least_loaded() -> None:
    a, b, c = make_backend("a"), make_backend("b"), make_backend("c")
    a.state.in_flight, b.state.in_flight, c.state.in_flight = 1, 3, 1
    c.state.engine = engine(running=7, waiting=0)
    scores = LoadScorer().score(route(), [a, b, c])
    assert scores == [1.0, pytest.approx(0.5), pytest.approx(0.25)]


# --- cost --------------------------------------------------------------------------------------


def test_idle_holder_of_the_prefix_wins() -> None:
    holder, other = make_backend("holder"), make_backend("other")
    scores = CostScorer(objective="ttft").score(route(matches={"holder": 80}), [holder, other])
    assert scores[0] == 1.0
    assert scores[1] < scores[0]
    # 1280 uncached tokens against 6400: five times faster to first token.
    assert scores[1] == pytest.approx(0.2)


def test_long_prefill_queue_on_the_holder_makes_another_backend_win() -> None:
    holder, other = make_backend("holder"), make_backend("other")
    holder.state.prefill.push(2.0, now=0.0)  # two seconds of queued prefill
    scores = CostScorer().score(route(matches={"holder": 80}), [holder, other])
    assert scores[1] == 1.0
    assert scores[0] < scores[1]


def test_short_queue_on_the_holder_is_worth_waiting_for() -> None:
    holder, other = make_backend("holder"), make_backend("other")
    holder.state.prefill.push(0.4, now=0.0)  # 0.4 s + 0.128 s < 0.64 s cold
    scores = CostScorer().score(route(matches={"holder": 80}), [holder, other])
    assert scores[0] == 1.0
    assert scores[1] < 1.0


def test_faster_hardware_wins_for_an_uncached_prompt() -> None:
    slow = make_backend("slow", prefill_tokens_per_s=10_000.0)
    fast = make_backend("fast", prefill_tokens_per_s=40_000.0)
    scores = CostScorer(objective="ttft").score(route(), [slow, fast])
    assert scores == [pytest.approx(0.25), 1.0]


def test_learned_prefill_speed_replaces_the_configured_one() -> None:
    # Both configured alike; one has shown it prefills twice as fast.
    slow, fast = make_backend("slow"), make_backend("fast")
    for _ in range(8):
        slow.calibration.observe_prefill(MODEL, 1000, 0.1)
        fast.calibration.observe_prefill(MODEL, 1000, 0.05)
    assert CostScorer(objective="ttft").score(route(), [slow, fast]) == [pytest.approx(0.5), 1.0]


def test_engine_waiting_beyond_the_gateways_own_queue_counts_in_the_cost() -> None:
    # Another replica's queue shows only in the engine's gauge; it is charged at the typical
    # prefill this backend has seen.
    busy = make_backend("busy", prefill_tokens_per_s=1000.0)
    busy.state.prefill.push(1.0, now=0.0)
    busy.state.prefill.done(0, now=0.0)  # typical prefill learned, nothing of ours queued
    assert queue_wait_s(route(), busy) == 0.0
    busy.state.engine = engine(running=0, waiting=4)
    assert queue_wait_s(route(), busy) == pytest.approx(4 * busy.state.prefill.typical_s)
    assert queue_wait_s(route(), busy) > 0.0


def test_a_gauge_read_while_our_own_requests_waited_is_not_someone_elses_queue() -> None:
    # Scraped while three of ours waited there; they have been served since. The stale
    # gauge must not be charged as a queue of other replicas'.
    b = make_backend("a", prefill_tokens_per_s=1000.0)
    b.state.prefill.push(1.0, now=0.0)
    b.state.prefill.done(0, now=0.0)
    b.state.engine = engine(running=0, waiting=3, own_in_flight=3, own_prefilling=3)
    assert queue_wait_s(route(), b) == 0.0


def test_other_replicas_exchanged_prefill_counts_and_drains_with_time() -> None:
    # The load exchange said other replicas have 0.5 s of prefill ahead there (read at t=0).
    b = make_backend("a", prefill_tokens_per_s=1000.0)
    b.state.exchanged = ExchangedLoad(in_flight=2, prefill_s=0.5, sampled_at=0.0)
    assert queue_wait_s(route(), b) == pytest.approx(0.5)
    later = dataclasses.replace(route(), now=0.2)
    assert queue_wait_s(later, b) == pytest.approx(0.3)
    assert queue_wait_s(dataclasses.replace(route(), now=1.0), b) == 0.0
    assert backend_load(b) == 2.0


def test_engine_gauge_and_exchange_are_two_counts_of_one_queue_the_larger_wins() -> None:
    b = make_backend("a", prefill_tokens_per_s=1000.0)
    b.state.prefill.push(0.25, now=0.0)
    b.state.prefill.done(0, now=0.0)  # typical prefill learned, nothing of ours queued
    typical = b.state.prefill.typical_s
    b.state.engine = engine(running=0, waiting=4)
    b.state.exchanged = ExchangedLoad(in_flight=1, prefill_s=0.01, sampled_at=0.0)
    assert queue_wait_s(route(), b) == pytest.approx(4 * typical)
    b.state.exchanged = ExchangedLoad(in_flight=1, prefill_s=9.0, sampled_at=0.0)
    assert queue_wait_s(route(), b) == pytest.approx(9.0)


def test_a_backend_other_replicas_are_prefilling_on_loses_a_cold_prompt() -> None:
    busy, idle = make_backend("busy"), make_backend("idle")
    busy.state.exchanged = ExchangedLoad(in_flight=1, prefill_s=0.3, sampled_at=0.0)
    scores = CostScorer(objective="ttft").score(route(), [busy, idle])
    assert scores[1] == 1.0
    assert scores[0] < 1.0


def test_decode_is_slowed_by_the_batch_that_will_overlap_it() -> None:
    b = make_backend("a", decode_s_per_token=0.02, decode_batch_slope=0.5)
    request = route(output_tokens=100)
    assert decode_s(request, b, 100) == pytest.approx(2.0)  # alone: 100 x 20 ms
    b.state.in_flight = 4
    b.state.decode_tokens_ahead = 400.0  # four requests still streaming past this one's end
    assert decode_s(request, b, 100) == pytest.approx(100 * 0.02 * (1 + 0.5 * 4))
    b.state.decode_tokens_ahead = 100.0  # together they overlap only a quarter each
    assert decode_s(request, b, 100) == pytest.approx(100 * 0.02 * (1 + 0.5 * 1))


@pytest.mark.parametrize("witness", ["engine", "exchange"])
def test_requests_others_sent_scale_the_decode_books(witness: str) -> None:
    b = make_backend("a", decode_s_per_token=0.02, decode_batch_slope=0.5)
    b.state.in_flight = 2
    b.state.decode_tokens_ahead = 200.0
    # Two more from elsewhere: four running when this replica had two there, or the other
    # replicas' own word.
    if witness == "engine":
        b.state.engine = engine(running=4, waiting=0, own_in_flight=2)
    else:
        b.state.exchanged = ExchangedLoad(in_flight=2, prefill_s=0.0, sampled_at=0.0)
    assert decode_s(route(), b, 100) == pytest.approx(100 * 0.02 * (1 + 0.5 * 4))


def test_completion_objective_spreads_a_hot_prefix_when_its_holder_streams_slowly() -> None:
    holder = make_backend("holder", decode_s_per_token=0.02, decode_batch_slope=0.1)
    other = make_backend("other", decode_s_per_token=0.02, decode_batch_slope=0.1)
    holder.state.in_flight = 40
    holder.state.decode_tokens_ahead = 40 * 256.0
    request = route(matches={"holder": 80}, output_tokens=256)
    # TTFT alone keeps the holder (1280 uncached tokens vs 6400) ...
    assert CostScorer(objective="ttft").score(request, [holder, other])[0] == 1.0
    # ... but 40 running requests make its stream five times slower: completion moves it.
    assert CostScorer(objective="completion").score(request, [holder, other])[1] == 1.0


def test_expected_output_is_capped_by_max_tokens_and_learned_from_answers() -> None:
    b = make_backend("a")
    assert expected_output_tokens(route(output_tokens=32), b) == 32
    assert expected_output_tokens(route(), b) == 256.0  # calibration.output_tokens default
    for _ in range(8):
        b.calibration.observe_decode(MODEL, 100, 2.0, 1.0)
    assert expected_output_tokens(route(), b) == 100.0
    assert expected_output_tokens(route(output_tokens=32), b) == 32
    assert expected_output_tokens(route(output_tokens=4000), b) == 100.0


def test_cost_of_an_empty_candidate_list() -> None:
    assert CostScorer().score(route(), []) == []
    assert LoadScorer().score(route(), []) == []
    assert AffinityScorer().score(route(), []) == []


# --- every scorer stays within [0, 1] ----------------------------------------------------------

backend_state = st.fixed_dictionaries(
    {
        "speed": st.floats(min_value=1.0, max_value=1e6),
        "in_flight": st.integers(min_value=0, max_value=10_000),
        "pending": st.floats(min_value=0.0, max_value=1e8),
        "matched": st.integers(min_value=0, max_value=1000),
        "engine": st.none() | st.tuples(st.floats(0, 1e4), st.floats(0, 1e4)),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    states=st.lists(backend_state, min_size=1, max_size=5),
    prompt_tokens=st.floats(min_value=0.0, max_value=1e6),
    total_blocks=st.integers(min_value=0, max_value=600),
)
def test_all_scores_are_within_unit_interval(
    states: list[dict[str, object]], prompt_tokens: float, total_blocks: int
) -> None:
    backends = []
    matches = {}
    for i, s in enumerate(states):
        b = make_backend(f"b{i}", prefill_tokens_per_s=s["speed"])
        b.state.in_flight = s["in_flight"]  # type: ignore[assignment]
        b.state.prefill.push(s["pending"] / s["speed"], now=0.0)  # type: ignore[operator]
        if s["engine"] is not None:
            running, waiting = s["engine"]  # type: ignore[misc]
            b.state.engine = engine(running, waiting)
        matches[b.id] = min(int(s["matched"]), total_blocks)  # type: ignore[call-overload]
        backends.append(b)
    request = route(prompt_tokens=prompt_tokens, total_blocks=total_blocks, matches=matches)
    for scorer in SCORERS:
        scores = scorer.score(request, backends)
        assert len(scores) == len(backends)
        assert all(0.0 <= s <= 1.0 for s in scores), (scorer.name, scores)
    # The best backend by cost and by load always scores exactly 1.
    assert max(CostScorer().score(request, backends)) == 1.0
    assert max(LoadScorer().score(request, backends)) == 1.0


def test_miss_penalty_keeps_a_busy_holder_longer() -> None:
    from gateway.routing.scorers import CostScorer

    holder = make_backend("a", prefill_tokens_per_s=10_000.0)
    other = make_backend("b", prefill_tokens_per_s=10_000.0)
    # 6400-token prompt, 90 of 100 blocks held by a: 0.064 s there, 0.64 s cold on b.
    holder.state.prefill.push(0.7, now=0.0)  # a is busy for 0.7 s
    request = route(matches={"a": 90})
    plain = CostScorer(0.0).score(request, [holder, other])
    assert plain[1] > plain[0]  # by TTFT alone, b wins
    charged = CostScorer(1.0).score(request, [holder, other])
    assert charged[0] > charged[1]  # recomputing 90 held blocks costs b another 0.576 s


def test_tokens_owed_fall_as_the_requests_in_flight_stream() -> None:
    b = make_backend("a")
    state = b.state
    state.decode_tokens_ahead = 300.0  # three requests expecting 100 tokens each
    state.decoding, state.decoding_since_sum = 2, 10.0 + 11.0  # two streaming since 10 s, 11 s
    assert state.decode_tokens_owed(now=11.0, itl_s=0.02) == pytest.approx(300.0 - 50.0)
    assert state.decode_tokens_owed(now=12.0, itl_s=0.02) == pytest.approx(300.0 - 150.0)
    assert state.decode_tokens_owed(now=60.0, itl_s=0.02) == 0.0
