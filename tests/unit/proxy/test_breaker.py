"""CircuitBreaker on an explicit clock: opening, cooldown, the one probe, stale verdicts."""

from __future__ import annotations

from gateway.fleet.breaker import Admission, BreakerState, CircuitBreaker
from gateway.fleet.registry import Backend
from gateway.proxy.forward import healthy
from gateway.routing.filters import BreakerFilter
from gateway.routing.types import RouteRequest
from gateway.settings import BackendSettings, BreakerSettings

SETTINGS = BreakerSettings(
    consecutive_failures=3, failure_rate=0.5, window_s=10, min_requests=6, cooldown_s=5
)


def breaker(**changes: object) -> CircuitBreaker:
    return CircuitBreaker(SETTINGS.model_copy(update=changes), "b")


def fail(b: CircuitBreaker, now: float, n: int = 1) -> None:
    for _ in range(n):
        b.record(b.admit(now), False, now)


def succeed(b: CircuitBreaker, now: float, n: int = 1) -> None:
    for _ in range(n):
        b.record(b.admit(now), True, now)


def test_consecutive_failures_open_it():
    b = breaker()
    fail(b, 0.0, 2)
    assert b.state(0.0) is BreakerState.CLOSED
    fail(b, 0.0)
    assert b.state(0.0) is BreakerState.OPEN
    assert b.admit(1.0) is Admission.REFUSED
    assert not b.available(1.0)
    assert b.opened == 1


def test_a_success_resets_the_consecutive_count():
    b = breaker(min_requests=100)
    for _ in range(5):
        fail(b, 0.0, 2)
        succeed(b, 0.0)
    assert b.state(0.0) is BreakerState.CLOSED


def test_a_good_head_of_an_attempt_still_in_flight_breaks_the_run_of_failures():
    # Long streams end after the quick 500s sent at the same time: a 200 head in between means
    # the backend is serving, so 2 + 2 failures around it are not 3 in a row.
    b = breaker(min_requests=100)
    streaming = b.admit(0.0)
    fail(b, 0.0, 2)
    b.answered(streaming)
    fail(b, 0.0, 2)
    assert b.state(0.0) is BreakerState.CLOSED
    b.record(streaming, True, 0.0)
    fail(b, 0.0, 2)
    assert b.state(0.0) is BreakerState.CLOSED
    fail(b, 0.0)
    assert b.state(0.0) is BreakerState.OPEN


def test_streams_that_break_after_a_good_head_still_open_it():
    # Every stream answers, then breaks off: each head ended the run, and each failure of
    # that same attempt takes the run back, so they count as consecutive after all.
    b = breaker(min_requests=100)
    for now in (0.0, 1.0):
        attempt = b.admit(now)
        ended = b.answered(attempt)
        b.record(attempt, False, now, ended)
        assert b.state(now) is BreakerState.CLOSED
    attempt = b.admit(2.0)
    b.record(attempt, False, 2.0, b.answered(attempt))
    assert b.state(2.0) is BreakerState.OPEN


def test_a_good_head_does_not_decide_a_probe():
    b = breaker()
    fail(b, 0.0, 3)
    probe = b.admit(5.0)
    assert probe is Admission.PROBE
    b.answered(probe)
    assert b.state(5.0) is BreakerState.HALF_OPEN
    assert b.admit(5.0) is Admission.REFUSED  # still the one probe, until it ends
    b.record(probe, False, 6.0)
    assert b.state(6.0) is BreakerState.OPEN


def test_the_failure_rate_over_the_window_opens_it():
    b = breaker(consecutive_failures=100)
    succeed(b, 0.0)
    fail(b, 0.0, 2)
    succeed(b, 0.0)
    fail(b, 0.0)
    assert b.state(0.0) is BreakerState.CLOSED  # 3 of 5: under min_requests
    fail(b, 0.0)
    assert b.state(0.0) is BreakerState.OPEN  # 4 of 6


def test_failures_age_out_of_the_window():
    b = breaker(consecutive_failures=100, min_requests=4)
    fail(b, 0.0, 3)
    assert b.window_counts(0.0) == (3, 3)
    assert b.window_counts(11.0) == (0, 0)
    succeed(b, 11.0, 3)
    fail(b, 11.0)
    assert b.state(11.0) is BreakerState.CLOSED  # 1 of 4


def test_after_the_cooldown_exactly_one_probe_goes_through():
    b = breaker()
    fail(b, 0.0, 3)
    assert b.retry_after_s(1.0) == 4.0
    assert b.state(5.0) is BreakerState.HALF_OPEN
    assert b.available(5.0)
    probe = b.admit(5.0)
    assert probe is Admission.PROBE
    assert b.admit(5.0) is Admission.REFUSED
    assert not b.available(5.0)
    b.record(probe, True, 6.0)
    assert b.state(6.0) is BreakerState.CLOSED
    assert b.window_counts(6.0) == (0, 0)  # a closed breaker starts over
    assert b.admit(6.0) is Admission.NORMAL


def test_a_failed_probe_opens_it_for_another_cooldown():
    b = breaker()
    fail(b, 0.0, 3)
    probe = b.admit(5.0)
    b.record(probe, False, 5.0)
    assert b.state(9.0) is BreakerState.OPEN
    assert b.state(10.0) is BreakerState.HALF_OPEN
    assert b.opened == 2


def test_a_probe_without_verdict_lets_the_next_one_through():
    b = breaker()
    fail(b, 0.0, 3)
    probe = b.admit(5.0)
    b.release(probe)  # the client went away
    assert b.admit(5.0) is Admission.PROBE


def test_verdicts_of_attempts_admitted_before_it_opened_are_ignored():
    b = breaker()
    early = b.admit(0.0)
    fail(b, 0.0, 3)
    b.record(early, True, 1.0)  # a stream that started earlier ends well
    assert b.state(1.0) is BreakerState.OPEN
    probe = b.admit(5.0)
    b.record(early, False, 5.5)
    assert b.admit(5.5) is Admission.REFUSED  # still one probe, and it is in flight
    b.record(probe, True, 6.0)
    assert b.state(6.0) is BreakerState.CLOSED


def test_disabled_it_admits_everything():
    b = breaker(enabled=False)
    fail(b, 0.0, 10)
    assert b.admit(0.0) is Admission.NORMAL
    assert b.available(0.0)


def test_attempt_results_and_their_verdicts():
    assert healthy("ok") is True
    assert healthy("status_400") is True  # the backend answered; the client was wrong
    assert healthy("status_404") is True
    for result in ("cancelled", "status_429", "truncated", "error"):
        assert healthy(result) is None
    for result in (
        "timeout", "unavailable", "broken", "stalled", "empty", "too_large", "stream_error",
        "status_500", "status_503", "status_204", "status_302", "status_600",
    ):  # fmt: skip
        assert healthy(result) is False


def make_backend(backend_id: str) -> Backend:
    settings = BackendSettings(id=backend_id, url="http://127.0.0.1:1", models=["m"])
    return Backend.from_settings(settings)


def test_the_filter_drops_open_backends_until_their_cooldown_ends():
    a, b = make_backend("a"), make_backend("b")
    b.state.breaker = breaker()
    fail(b.state.breaker, 100.0, 3)
    keep = BreakerFilter().keep
    request = RouteRequest("m", 10.0, 1, 256, now=101.0)
    assert keep(request, [a, b]) == [a]
    later = RouteRequest("m", 10.0, 1, 256, now=105.0)
    assert keep(later, [a, b]) == [a, b]
    fail(a.state.breaker, 100.0, 5)
    assert keep(request, [a, b]) == []  # fails closed: the forwarder answers 503
