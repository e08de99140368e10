"""Staleness model: insertion rate, residency, cutoffs and epochs on a fake clock."""

from __future__ import annotations

import math

import pytest

from gateway.prefix.breaker import BreakerState, CircuitBreaker
from gateway.prefix.staleness import StalenessConfig, StalenessModel
from tests.unit.prefix.fakes import FakeClock


def model(clock: FakeClock, max_age_s: float | None = None) -> StalenessModel:
    config = StalenessConfig(
        rate_window_s=60.0, warmup_s=10.0, safety_factor=1.0, max_age_s=max_age_s
    )
    m = StalenessModel(config, clock=clock)
    m.configure({"a": 6000})
    return m


def test_idle_backend_never_ages_entries() -> None:
    clock = FakeClock()
    m = model(clock)
    assert m.insertion_rate("a") == 0.0
    assert m.residency_s("a") == math.inf
    assert m.cutoff("a") == -math.inf


def test_steady_rate_converges_and_sets_residency() -> None:
    clock = FakeClock()
    m = model(clock)
    for _ in range(600):  # 100 blocks/s for 10 minutes
        clock.advance(1.0)
        m.observe_inserted("a", 100)
    assert m.insertion_rate("a") == pytest.approx(100, rel=0.02)
    assert m.residency_s("a") == pytest.approx(60, rel=0.02)  # 6000 blocks / 100 per s
    assert m.cutoff("a") == pytest.approx(clock.now - 60, abs=1.5)


def test_warmup_is_bias_corrected() -> None:
    clock = FakeClock()
    m = model(clock)
    for _ in range(20):
        clock.advance(1.0)
        m.observe_inserted("a", 50)
    assert m.insertion_rate("a") == pytest.approx(50, rel=0.2)


def test_rate_decays_when_traffic_stops() -> None:
    clock = FakeClock()
    m = model(clock)
    for _ in range(120):
        clock.advance(1.0)
        m.observe_inserted("a", 100)
    busy = m.insertion_rate("a")
    clock.advance(600)
    assert m.insertion_rate("a") < busy / 100
    assert m.residency_s("a") > 100 * 60


def test_safety_factor_shortens_the_cutoff() -> None:
    clock = FakeClock()
    strict = StalenessModel(StalenessConfig(safety_factor=0.5), clock=clock)
    loose = StalenessModel(StalenessConfig(safety_factor=1.0), clock=clock)
    for m in (strict, loose):
        m.configure({"a": 1000})
    for _ in range(100):
        clock.advance(0.1)
        for m in (strict, loose):
            m.observe_inserted("a", 10)
    assert strict.cutoff("a") > loose.cutoff("a")


def test_epoch_hides_older_entries_and_never_moves_back() -> None:
    clock = FakeClock()
    m = model(clock)
    t = m.new_epoch("a")
    assert m.cutoff("a") == t
    m.raise_epoch("a", t - 100)
    assert m.epoch("a") == t
    clock.advance(5)
    m.raise_epoch("a", clock.now)
    assert m.cutoff("a") == clock.now


def test_max_age_caps_entries() -> None:
    clock = FakeClock()
    m = model(clock, max_age_s=30.0)
    assert m.cutoff("a") == clock.now - 30.0


def test_shared_counter_first_value_is_a_baseline() -> None:
    clock = FakeClock()
    m = model(clock)
    m.observe_total("a", 1_000_000)
    assert m.insertion_rate("a") == 0.0
    for i in range(1, 121):
        clock.advance(1.0)
        m.observe_total("a", 1_000_000 + 200 * i)
    assert m.insertion_rate("a") == pytest.approx(200, rel=0.05)
    m.observe_total("a", 5)  # counter reset (Redis flushed): new baseline, no negative rate
    assert m.insertion_rate("a") > 0


def test_configure_drops_unlisted_and_defaults_unknown() -> None:
    clock = FakeClock()
    m = StalenessModel(StalenessConfig(default_capacity_blocks=77), clock=clock)
    assert m.configure({"a": 10, "b": 20}) == []
    assert m.configure({"b": 30}) == ["a"]
    assert m.backends() == ("b",)
    assert m.capacity("b") == 30
    m.ensure("c")
    assert m.capacity("c") == 77


@pytest.mark.parametrize(
    "kwargs",
    [
        {"safety_factor": 0},
        {"rate_window_s": 0},
        {"warmup_s": -1},
        {"default_capacity_blocks": 0},
        {"max_age_s": 0},
    ],
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        StalenessConfig(**kwargs)  # type: ignore[arg-type]


def state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so that mypy does not narrow the property across calls


def test_breaker_opens_half_opens_and_recovers() -> None:
    clock = FakeClock()
    changes: list[bool] = []
    breaker = CircuitBreaker(
        failure_threshold=3, cooldown_s=2.0, clock=clock, on_change=changes.append
    )
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.consecutive_failures == 2
    assert state(breaker) is BreakerState.CLOSED
    breaker.failure()
    assert state(breaker) is BreakerState.OPEN
    assert changes == [True]
    assert not breaker.allow()
    clock.advance(2.0)
    assert breaker.allow()  # the one trial
    assert state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow()
    breaker.failure()
    assert state(breaker) is BreakerState.OPEN
    clock.advance(2.0)
    assert breaker.allow()
    breaker.success()
    assert state(breaker) is BreakerState.CLOSED
    assert changes == [True, False]
    assert (breaker.opened, breaker.closed) == (1, 1)


def test_breaker_lost_trial_is_retried_after_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1.0, clock=clock)
    breaker.failure()
    clock.advance(1.0)
    assert breaker.allow()
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


def test_breaker_callback_errors_are_swallowed() -> None:
    def boom(_: bool) -> None:
        raise RuntimeError("log handler broke")

    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=0, clock=FakeClock(), on_change=boom)
    breaker.failure()
    assert state(breaker) is BreakerState.OPEN


def test_a_reported_shortfall_shortens_residency_and_hits_win_it_back() -> None:
    from gateway.prefix.staleness import MIN_TRUST

    clock = [100.0]
    model = StalenessModel(StalenessConfig(warmup_s=0.0), clock=lambda: clock[0])
    model.configure({"a": 1000})
    model.observe_inserted("a", 100)
    before = model.residency_s("a")
    model.observe_prediction("a", held=False)
    assert model.residency_s("a") < before
    assert model.cutoff("a") > clock[0] - before * model.config.safety_factor
    for _ in range(200):
        model.observe_prediction("a", held=False)
    assert model.trust("a") == MIN_TRUST
    for _ in range(500):
        model.observe_prediction("a", held=True)
    assert model.trust("a") == 1.0
