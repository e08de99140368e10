"""Self-calibration: weighted medians, robust estimates, the decode latency fit, per backend."""

from __future__ import annotations

import random

import pytest

from gateway.fleet.calibration import (
    BackendCalibration,
    BatchLatencyFit,
    CalibrationDefaults,
    FleetPool,
    PrefillFit,
    RobustEstimate,
    RobustLine,
    weighted_median,
)
from gateway.fleet.registry import Fleet
from gateway.settings import BackendSettings, CalibrationSettings

# --- weighted_median -----------------------------------------------------------------------------


def test_weighted_median_of_equal_weights_is_the_middle_value() -> None:
    assert weighted_median([3.0, 1.0, 2.0], [1.0, 1.0, 1.0]) == 2.0


def test_weighted_median_exact_tie_takes_the_lower_value() -> None:
    assert weighted_median([2.0, 1.0], [1.0, 1.0]) == 1.0
    assert weighted_median([4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]) == 2.0


def test_weighted_median_follows_the_weights() -> None:
    # One heavy sample outweighs several light ones, whatever the order they came in.
    assert weighted_median([1.0, 10.0, 2.0], [1.0, 5.0, 1.0]) == 10.0
    assert weighted_median([10.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]) == 2.0
    assert weighted_median([5.0, 1.0], [3.0, 1.0]) == 5.0
    assert weighted_median([5.0, 1.0], [1.0, 3.0]) == 1.0


def test_weighted_median_of_one_value() -> None:
    assert weighted_median([7.5], [0.25]) == 7.5


# --- RobustEstimate ------------------------------------------------------------------------------


def test_robust_estimate_keeps_the_configured_value_until_min_samples() -> None:
    estimate = RobustEstimate(4.0, min_samples=8)
    for i in range(7):
        estimate.add(5.0)
        assert estimate.value == 4.0
        assert not estimate.learned
        assert estimate.samples == i + 1
    estimate.add(5.0)
    assert estimate.learned
    assert estimate.value == 5.0


def test_robust_estimate_ignores_zero_and_negative_values_and_weights() -> None:
    estimate = RobustEstimate(4.0, min_samples=1)
    estimate.add(0.0)
    estimate.add(-3.0)
    estimate.add(5.0, weight=0.0)
    estimate.add(5.0, weight=-1.0)
    estimate.add(float("nan"))
    assert estimate.samples == 0
    assert estimate.value == 4.0
    assert not estimate.learned


def test_robust_estimate_is_not_moved_by_an_outlier_or_two() -> None:
    estimate = RobustEstimate(4.0, min_samples=8)
    for _ in range(10):
        estimate.add(4.4, weight=100.0)
    assert estimate.value == 4.4
    estimate.add(40.0, weight=100.0)
    estimate.add(0.01, weight=100.0)
    estimate.add(400.0, weight=100.0)
    assert estimate.value == 4.4


def test_robust_estimate_weights_favour_large_samples() -> None:
    estimate = RobustEstimate(4.0, min_samples=3)
    for _ in range(4):
        estimate.add(3.0, weight=10.0)  # short prompts, odd text
    estimate.add(4.5, weight=1000.0)  # one long prompt carries more evidence than all of them
    assert estimate.value == 4.5


def test_robust_estimate_window_follows_a_change() -> None:
    estimate = RobustEstimate(4.0, window=16, min_samples=4)
    for _ in range(16):
        estimate.add(4.0)
    assert estimate.value == 4.0
    for _ in range(7):
        estimate.add(6.0)
    assert estimate.value == 4.0  # still the majority of the window
    for _ in range(9):
        estimate.add(6.0)
    assert estimate.value == 6.0
    assert estimate.samples == 16  # the window is bounded


# --- BatchLatencyFit -----------------------------------------------------------------------------


def synthetic_fit(
    base: float, slope: float, outliers: int, seed: int = 7, noise: float = 0.05
) -> BatchLatencyFit:
    rng = random.Random(seed)
    fit = BatchLatencyFit(0.5, window=64, min_samples=8)
    points = []
    for _ in range(60 - outliers):
        batch = rng.randint(1, 32)
        itl = (base + slope * (batch - 1)) * (1 + rng.uniform(-noise, noise))
        points.append((batch, itl))
    for _ in range(outliers):
        batch = rng.randint(1, 32)
        points.append((batch, (base + slope * (batch - 1)) * 10))  # a stalled request
    rng.shuffle(points)
    for batch, itl in points:
        fit.observe(batch, itl, rng.randint(20, 200))
    return fit


def test_batch_fit_recovers_base_and_slope_from_noisy_points() -> None:
    fit = synthetic_fit(0.02, 0.0005, outliers=0)
    assert fit.learned
    assert fit.base == pytest.approx(0.02, rel=0.1)
    assert fit.slope == pytest.approx(0.0005, rel=0.1)
    assert fit.itl_s(17) == pytest.approx(0.02 + 16 * 0.0005, rel=0.05)


def test_batch_fit_rejects_a_few_outliers() -> None:
    fit = synthetic_fit(0.02, 0.0005, outliers=3)
    assert fit.base == pytest.approx(0.02, rel=0.1)
    assert fit.slope == pytest.approx(0.0005, rel=0.15)


def test_batch_fit_slope_is_never_negative() -> None:
    fit = BatchLatencyFit(0.02, min_samples=4)
    # Latency that falls with the batch (say, warm-up at low batch): not a real trend.
    for batch, itl in [(1, 0.05), (4, 0.04), (8, 0.03), (16, 0.02), (32, 0.01)]:
        fit.observe(batch, itl, 1.0)
    assert fit.slope == 0.0
    assert fit.base == pytest.approx((0.05 + 0.04 + 0.03 + 0.02 + 0.01) / 5)
    assert fit.itl_s(32) == fit.base


def test_batch_fit_keeps_the_configured_values_until_enough_samples() -> None:
    fit = BatchLatencyFit(0.02, 0.0002, min_samples=8)
    for batch in range(1, 8):
        fit.observe(batch, 0.1 + 0.01 * batch, 10.0)
    assert not fit.learned
    assert fit.base == 0.02
    assert fit.slope == 0.0002
    assert fit.itl_s(1) == 0.02
    assert fit.itl_s(0) == 0.02  # fewer than one running request counts as one
    fit.observe(8, 0.18, 10.0)
    assert fit.learned
    assert fit.base == pytest.approx(0.11)
    assert fit.slope == pytest.approx(0.01)


def test_batch_fit_ignores_impossible_samples() -> None:
    fit = BatchLatencyFit(0.02, min_samples=1)
    fit.observe(0, 0.03, 1.0)  # no batch running
    fit.observe(0.5, 0.03, 1.0)
    fit.observe(2, 0.0, 1.0)
    fit.observe(2, -0.1, 1.0)
    fit.observe(2, 0.03, 0.0)
    assert not fit.learned
    assert fit.base == 0.02


def test_batch_fit_of_one_batch_size_keeps_the_configured_slope() -> None:
    # Requests that all ran in a batch of four say nothing about how the batch slows them:
    # the configured slope stays and the line goes through what they showed.
    fit = BatchLatencyFit(0.02, 0.001, min_samples=4, min_spread=1.0)
    for itl in (0.03, 0.03, 0.03, 0.03):
        fit.observe(4, itl, 1.0)
    assert fit.slope == 0.001
    assert fit.itl_s(4) == pytest.approx(0.03)
    assert fit.base == pytest.approx(0.027)


# --- RobustLine and PrefillFit ------------------------------------------------------------------


def test_robust_line_through_exact_points() -> None:
    line = RobustLine(1.0, 0.5, min_samples=3)
    assert line.at(2.0) == 2.0  # the configured line first
    for x in (0.0, 1.0, 2.0, 3.0):
        line.add(x, 0.5 + 0.25 * x)
    assert line.learned
    assert line.intercept == pytest.approx(0.5)
    assert line.slope == pytest.approx(0.25)
    assert line.at(10.0) == pytest.approx(3.0)


def test_robust_line_rejects_a_hiccup() -> None:
    line = RobustLine(0.0, min_samples=4)
    for x in range(1, 13):
        line.add(float(x), 1.0 + 0.1 * x + (0.001 if x % 2 else -0.001))
    line.add(6.0, 50.0)  # one request that met a stall
    assert line.slope == pytest.approx(0.1, rel=0.05)
    assert line.intercept == pytest.approx(1.0, rel=0.05)


def test_robust_line_ignores_negative_x_and_non_positive_y() -> None:
    line = RobustLine(0.3, min_samples=1)
    line.add(-1.0, 1.0)
    line.add(1.0, 0.0)
    line.add(1.0, -2.0)
    line.add(1.0, 1.0, weight=0.0)
    assert not line.learned
    assert line.intercept == 0.3


def test_prefill_fit_puts_the_fixed_part_of_ttfb_in_the_intercept() -> None:
    fit = PrefillFit(10_000.0, window=64, min_samples=4)
    for tokens in (500, 1000, 2000, 4000, 8000, 16000):
        fit.add(tokens, 0.05 + tokens / 20_000)  # 50 ms of fixed cost, 20k tokens/s
    assert fit.learned
    assert fit.value == pytest.approx(20_000.0, rel=0.01)
    assert fit.configured == 10_000.0
    # The plain ratio would have called it slower: the fixed part inflates short prefills.
    assert fit.ratio.value < 19_000.0


def test_prefill_fit_uses_the_ratio_until_the_samples_spread() -> None:
    fit = PrefillFit(10_000.0, window=64, min_samples=3)
    fit.add(1000, 0.05)
    fit.add(1000, 0.05)
    assert fit.value == 10_000.0
    assert not fit.learned
    fit.add(1000, 0.05)
    assert fit.value == pytest.approx(20_000.0)  # no spread along tokens: slope 0, the ratio


# --- BackendCalibration --------------------------------------------------------------------------


def defaults(**changes: object) -> CalibrationDefaults:
    fields: dict[str, object] = {
        "bytes_per_token": 4.0,
        "prefill_tokens_per_s": 10_000.0,
        "itl_s": 0.02,
        "itl_batch_slope": 0.01,
        "kv_cache_tokens": 100_000,
        "output_tokens": 256.0,
        "window": 16,
        "min_samples": 2,
    }
    fields.update(changes)
    return CalibrationDefaults(**fields)  # type: ignore[arg-type]


def test_backend_calibration_starts_at_the_configured_values() -> None:
    calibration = BackendCalibration(defaults())
    assert calibration.bytes_per_token("a") == 4.0
    assert calibration.prefill_tokens_per_s("a") == 10_000.0
    assert calibration.kv_cache_tokens == 100_000
    assert calibration.itl_s("a", 1.0) == 0.02
    assert calibration.itl_s("a", 11.0) == pytest.approx(0.02 * (1 + 0.01 * 10))
    assert calibration.output_tokens("a").value == 256.0


def test_backend_calibration_learns_per_model() -> None:
    calibration = BackendCalibration(defaults())
    for _ in range(2):
        calibration.observe_prompt("a", 4400, 1000)
        calibration.observe_prefill("a", 5000, 0.25)
    assert calibration.bytes_per_token("a") == pytest.approx(4.4)
    assert calibration.prefill_tokens_per_s("a") == pytest.approx(20_000.0)
    assert calibration.bytes_per_token("b") == 4.0
    assert calibration.prefill_tokens_per_s("b") == 10_000.0


def test_backend_calibration_observations_ignore_zero_and_negative() -> None:
    calibration = BackendCalibration(defaults(min_samples=1))
    calibration.observe_prompt("a", 0, 100)
    calibration.observe_prompt("a", 400, 0)
    calibration.observe_prompt("a", -400, 100)
    calibration.observe_prefill("a", 0, 1.0)
    calibration.observe_prefill("a", 100, 0.0)
    calibration.observe_prefill("a", -100, 1.0)
    calibration.observe_decode("a", 0, 1.0, 1)
    calibration.observe_decode("a", -5, 1.0, 1)
    assert calibration.bytes_per_token("a") == 4.0
    assert calibration.prefill_tokens_per_s("a") == 10_000.0
    model = calibration.model("a")
    assert model.bytes_per_token.samples == 0
    assert model.prefill_speed.ratio.samples == 0
    pooled = calibration.pooled("a")
    assert pooled.output_tokens.samples == 0
    assert not pooled.decode.learned


def test_backend_calibration_learns_decode_latency_and_output_length() -> None:
    calibration = BackendCalibration(defaults())
    calibration.observe_decode("a", 11, 0.5, 1)  # 10 gaps in 0.5 s
    calibration.observe_decode("a", 21, 1.0, 1)
    pooled = calibration.pooled("a")
    assert pooled.decode.learned
    assert calibration.itl_s("a", 1.0) == pytest.approx(0.05)
    # One batch size shows no slope: the configured one (1% per extra request) stays.
    assert calibration.itl_s("a", 2.0) == pytest.approx(0.05 + 0.02 * 0.01)
    assert calibration.output_tokens("a").value == 11.0  # the lower of the two on a tie


def test_backend_calibration_one_output_token_counts_length_but_not_latency() -> None:
    calibration = BackendCalibration(defaults(min_samples=1))
    calibration.observe_decode("a", 1, 0.5, 1)
    assert calibration.output_tokens("a").value == 1.0
    assert not calibration.pooled("a").decode.learned
    assert calibration.itl_s("a", 1.0) == 0.02


def test_backend_calibration_with_learning_disabled_keeps_the_configured_values() -> None:
    calibration = BackendCalibration(defaults(learn=False, min_samples=1))
    for _ in range(4):
        calibration.observe_prompt("a", 4400, 1000)
        calibration.observe_prefill("a", 5000, 0.25)
        calibration.observe_decode("a", 11, 0.5, 1)
    assert calibration.bytes_per_token("a") == 4.0
    assert calibration.prefill_tokens_per_s("a") == 10_000.0
    assert calibration.itl_s("a", 1.0) == 0.02
    assert calibration.output_tokens("a").value == 256.0


def test_a_pooled_decode_line_ranks_backends_by_configured_speed_and_batch() -> None:
    pool = FleetPool(defaults(min_samples=4))
    fast = BackendCalibration(defaults(itl_s=0.01), pool)
    slow = BackendCalibration(defaults(itl_s=0.02), pool)
    # Both decode at twice their configured latency alone, plus 10% per extra request.
    for batch in (1, 3, 5, 7):
        fast.observe_decode("a", 101, 100 * 0.02 * (1 + 0.1 * (batch - 1)), batch)
        slow.observe_decode("a", 101, 100 * 0.04 * (1 + 0.1 * (batch - 1)), batch)
    assert fast.itl_s("a", 1.0) == pytest.approx(0.02)
    assert slow.itl_s("a", 1.0) == pytest.approx(0.04)
    assert slow.itl_s("a", 11.0) == pytest.approx(0.04 * 2.0)


def test_a_backend_still_learning_its_speed_is_judged_by_how_far_off_the_config_is() -> None:
    pool = FleetPool(defaults(min_samples=2))
    seen = BackendCalibration(defaults(prefill_tokens_per_s=10_000.0), pool)
    unseen = BackendCalibration(defaults(prefill_tokens_per_s=20_000.0), pool)
    for _ in range(4):
        seen.observe_prefill("a", 3000, 0.1)  # 30k tokens/s: three times the configuration
    assert seen.prefill_tokens_per_s("a") == pytest.approx(30_000.0)
    assert unseen.prefill_tokens_per_s("a") == pytest.approx(60_000.0)


def test_learn_engine_cache_reports_only_a_change() -> None:
    calibration = BackendCalibration(defaults())
    assert calibration.learn_engine_cache(32768, 16) is True
    assert calibration.engine_kv_tokens == 32768
    assert calibration.engine_block_tokens == 16
    assert calibration.kv_cache_tokens == 32768
    assert calibration.learn_engine_cache(32768, 16) is False
    assert calibration.learn_engine_cache(None, 32) is False
    assert calibration.engine_block_tokens == 32
    assert calibration.engine_kv_tokens == 32768
    assert calibration.learn_engine_cache(0, None) is False
    assert calibration.engine_kv_tokens == 32768
    assert calibration.learn_engine_cache(65536, None) is True
    assert calibration.engine_kv_tokens == 65536
    assert calibration.engine_block_tokens == 32


def test_kv_cache_tokens_falls_back_to_the_configured_value() -> None:
    calibration = BackendCalibration(defaults(kv_cache_tokens=1234))
    assert calibration.engine_kv_tokens is None
    assert calibration.kv_cache_tokens == 1234
    assert calibration.learn_engine_cache(None, 16) is False
    assert calibration.kv_cache_tokens == 1234


# --- pooled tokenizer ratios -------------------------------------------------------------------


def test_a_backend_without_reports_of_its_own_uses_what_the_fleet_has_shown() -> None:
    fleet = Fleet.from_settings(
        [
            BackendSettings(id="a", url="http://a.test:8000", models=["m"]),
            BackendSettings(id="b", url="http://b.test:8000", models=["m"]),
            BackendSettings(id="own", url="http://c.test:8000", models=["m"], bytes_per_token=3.0),
        ],
        CalibrationSettings(min_samples=4),
        bytes_per_token=4.0,
    )
    a, b, own = fleet.backends
    assert b.calibration.bytes_per_token("m") == 4.0
    for _ in range(4):
        a.calibration.observe_prompt("m", 4500, 1000)
    # b never answered, but it serves the same model: same tokenizer.
    assert b.calibration.bytes_per_token("m") == pytest.approx(4.5)
    # A backend configured with a ratio of its own keeps it until it reports.
    assert own.calibration.bytes_per_token("m") == 3.0
    for _ in range(4):
        b.calibration.observe_prompt("m", 5000, 1000)
    assert b.calibration.bytes_per_token("m") == pytest.approx(5.0)  # its own reports win
