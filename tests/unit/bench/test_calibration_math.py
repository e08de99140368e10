"""Unit tests of the calibration additions: ITL, speed classes, new checks, token sizing."""

from __future__ import annotations

import argparse
import math

import orjson
import pytest

from bench.calibration_matrix import build_parser, parts
from bench.checks import CheckContext, gateways_check, workload_checks
from bench.harness import FleetSettings, GatewayOptions, gateway_config
from bench.matrix_report import config_table, lag_flags, matrix_checks
from bench.offline import PromptBlocks
from bench.plan import model_len
from bench.procs import StartupError
from bench.replay import Outcome
from bench.report import (
    BackendDelta,
    fastest_share,
    inter_token_gaps,
    per_request_mean_gaps,
    speed_class_shares,
    summarize,
)
from bench.text import PseudoText
from bench.tokens import SimTokenizer, sim_has_ratio
from bench.workloads import BenchRequest, Workload


def test_inter_token_gaps_per_gap_and_per_request() -> None:
    outcomes = [
        Outcome(0, 0.0, ttft=0.1, e2e=1.0, gaps=[0.02, 0.02, 0.08]),
        Outcome(1, 0.0, ttft=0.1, e2e=1.0, gaps=[0.04]),
        Outcome(2, 0.0, ttft=0.1, e2e=1.0, gaps=[]),  # one content chunk: no gap
        Outcome(3, 0.0, ttft=None, error="x", gaps=[9.0]),  # failed requests are left out
    ]
    assert inter_token_gaps(outcomes) == [0.02, 0.02, 0.08, 0.04]
    assert per_request_mean_gaps(outcomes) == pytest.approx([0.04, 0.04])
    deltas = [BackendDelta("b0", 3, 100, 0, 1.0, 0)]
    s = summarize(outcomes, deltas, time_scale=2.0)
    assert s.itl_sim["p50"] == pytest.approx(0.03 / 2.0)  # per-gap median, simulated seconds
    assert s.itl_sim["p99"] == pytest.approx(percentile_99([0.02, 0.02, 0.04, 0.08]) / 2.0)
    assert s.tpot_sim["p50"] == pytest.approx(0.02)
    assert math.isnan(s.fast_share)  # one backend, one class


def percentile_99(values: list[float]) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * 0.99
    lo = int(pos)
    return ordered[lo] + (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo]) * (pos - lo)


def test_speed_class_shares_from_backend_stats() -> None:
    deltas = [
        BackendDelta("b0", 1, 100, 50, 1.0, 0, prefill_tps=1000.0),
        BackendDelta("b1", 1, 100, 0, 1.0, 0, prefill_tps=1000.0),
        BackendDelta("b2", 1, 300, 0, 1.0, 0, prefill_tps=2000.0),
    ]
    classes = speed_class_shares(deltas)
    assert classes == {"1000": pytest.approx(150 / 450), "2000": pytest.approx(300 / 450)}
    assert fastest_share(classes) == pytest.approx(2 / 3)
    assert math.isnan(fastest_share({"1000": 1.0}))


def _run(p50: float, p99: float, fast: float = math.nan, e2e99: float = 1.0) -> dict[str, object]:
    return {
        "hit_rate": 0.8,
        "ttft_sim": {"p50": p50, "p90": p99, "p99": p99},
        "e2e_sim": {"p50": e2e99 / 2, "p90": e2e99, "p99": e2e99},
        "itl_sim": {"p50": 0.02, "p90": 0.02, "p99": 0.03},
        "fast_share": fast,
        "throughput_rps_sim": 10.0,
        "request_max_over_mean": 1.2,
        "prefill_max_over_mean": 1.0,
        "utilisation_mean": 0.6,
        "utilisation_max": 0.7,
        "errors": 0,
    }


def test_fast_share_after_warm_up_from_the_later_counters() -> None:
    whole = [
        BackendDelta("b0", 2, 100, 0, 1.0, 0, prefill_tps=1000.0),
        BackendDelta("b1", 2, 100, 0, 1.0, 0, prefill_tps=2000.0),
    ]
    warm = [
        BackendDelta("b0", 1, 30, 0, 1.0, 0, prefill_tps=1000.0),
        BackendDelta("b1", 1, 70, 0, 1.0, 0, prefill_tps=2000.0),
    ]
    outcomes = [Outcome(0, 0.0, ttft=0.1, e2e=1.0)]
    s = summarize(outcomes, whole, 1.0, warm)
    assert s.fast_share == pytest.approx(0.5)
    assert s.fast_share_warm == pytest.approx(0.7)
    assert math.isnan(summarize(outcomes, whole, 1.0).fast_share_warm)
    # The check reads the share after warm-up where the run measured one.
    runs = {"profile": [{**_run(0.05, 0.5, fast=0.5), "fast_share_warm": 0.7}]}
    ctx = CheckContext(0.02, speed_classes=2, tell_speeds="equal")
    checks = {c.name: c for c in workload_checks("x", 0.9, runs, ctx)}
    assert checks["profile: fastest class carries >= 60% of prefill tokens"].passed


def test_heterogeneous_checks() -> None:
    runs = {
        "profile": [_run(0.05, 0.5, fast=0.64)],
        "round_robin": [_run(0.20, 0.9, fast=0.5)],
        "least_loaded": [_run(0.04, 0.4, fast=0.55)],
    }
    ctx = CheckContext(0.02, speed_classes=2, tell_speeds="equal")
    by_name = {c.name: c for c in workload_checks("x", 0.9, runs, ctx)}
    assert by_name["profile: fastest class carries >= 60% of prefill tokens"].passed
    assert "equal" in by_name["profile: fastest class carries >= 60% of prefill tokens"].detail
    assert by_name["profile TTFT p50 < round_robin's"].passed
    assert not by_name["profile TTFT p50 < least_loaded's"].passed
    homogeneous = workload_checks("x", 0.9, runs, CheckContext())
    assert homogeneous == []


def test_e_checks_use_e2e_and_say_whether_decode_is_batch_dependent() -> None:
    runs = {"profile": [_run(0.1, 0.4, e2e99=2.0)], "sglang_threshold": [_run(0.1, 1.0, e2e99=2.5)]}
    checks = {c.name: c for c in workload_checks("e", 0.6, runs, CheckContext(0.02))}
    assert checks["profile TTFT p99 <= 0.5x sglang_threshold's"].passed
    assert checks["profile e2e p99 <= sglang_threshold's"].passed
    assert "slowdown 0.02" in checks["profile e2e p99 <= sglang_threshold's"].detail
    flat = {c.name: c for c in workload_checks("e", 0.6, runs, CheckContext(None))}
    assert "NOT batch-dependent" in flat["profile e2e p99 <= sglang_threshold's"].detail


def test_figures_read_back_from_json_treat_null_as_nan() -> None:
    run = orjson.loads(orjson.dumps(_run(0.1, 1.0)))  # NaN fast_share is written as null
    assert run["fast_share"] is None
    assert math.isnan(gateways_check([run], [run]).passed * math.nan)
    assert gateways_check([run], [run]).passed


def test_gateways_check_within_ten_percent() -> None:
    assert gateways_check([_run(0.1, 1.0)], [_run(0.1, 1.09)]).passed
    assert not gateways_check([_run(0.1, 1.0)], [_run(0.1, 1.2)]).passed
    missing = gateways_check([_run(0.1, 1.0)], [])
    assert not missing.passed
    assert "2 gateways" in missing.detail


def test_c_long_gets_the_hit_rate_check() -> None:
    runs = {"profile": [_run(0.1, 0.4)]}
    names = [c.name for c in workload_checks("c_long", 0.8, runs)]
    assert "profile hit rate >= 95% of the offline upper bound" in names


class _FakeTokenizer:
    """Content-dependent: a token per 6 bytes, plus one per space (denser near spaces)."""

    ratio = 5.0

    def count(self, text: str) -> int:
        return -(-len(text.encode()) // 6) + text.count(" ")


def test_text_is_sized_in_the_tokenizers_tokens() -> None:
    fake = _FakeTokenizer()
    text = PseudoText(3, tokenizer=fake)
    for n in (1, 17, 512, 2048):
        s = text.text("k", n)
        assert fake.count(s) <= n < fake.count(text.text("k", n + 50)[: len(s) + 1])
        assert n - fake.count(s) <= 1
    assert text.text("k", 2048).startswith(text.text("k", 100))


@pytest.mark.skipif(not sim_has_ratio(), reason="simulator tokenizer has a fixed ratio")
@pytest.mark.parametrize("ratio", [3.0, 4.5, 6.0])
def test_sim_tokenizer_ratio_sizes_prompts(ratio: float) -> None:
    tokenizer = SimTokenizer(ratio)
    s = PseudoText(0, tokenizer=tokenizer).text("system", 2048)
    assert tokenizer.count(s) == 2048
    assert len(s.encode()) / 2048 == pytest.approx(ratio, rel=0.2)
    prompt = tokenizer.chat([{"role": "system", "content": s}], 16)
    assert prompt.n_tokens == pytest.approx(2048, rel=0.03)
    assert len(prompt.hashes) == prompt.n_tokens // 16


def test_fixed_ratio_simulator_refuses_other_ratios() -> None:
    if sim_has_ratio():
        assert SimTokenizer(3.0).ratio == 3.0
    else:
        with pytest.raises(ValueError, match="fixed"):
            SimTokenizer(3.0)


def test_speeds_keep_the_mean_and_the_gateway_is_told_true_or_equal() -> None:
    fleet = FleetSettings(4, 16, 100, 3000.0, 20.0, 2.0, speeds=(1.0, 2.0))
    assert fleet.backend_tps() == [2000.0, 4000.0, 2000.0, 4000.0]
    true = orjson.loads(gateway_config(fleet, GatewayOptions("profile"), 8080, 9000))
    assert [b["prefill_tokens_per_s"] for b in true["backends"]] == [1000.0, 2000.0] * 2
    assert all(b["kv_cache_tokens"] == 1600 for b in true["backends"])
    opts = GatewayOptions("profile", kv_told=False, tell_speeds="equal")
    equal = orjson.loads(gateway_config(fleet, opts, 8080, 9000))
    assert [b["prefill_tokens_per_s"] for b in equal["backends"]] == [1500.0] * 4
    assert all("kv_cache_tokens" not in b for b in equal["backends"])


def test_sim_args_pass_only_set_flags_and_refuse_unknown_ones() -> None:
    fleet = FleetSettings(2, 16, 100, 3000.0, 20.0, 1.0, decode_batch_slowdown=0.02)
    known = frozenset({"--decode-batch-slowdown", "--prefill-tokens-per-s"})
    args = fleet.sim_args(9000, known)
    assert args[args.index("--decode-batch-slowdown") + 1] == "0.02"
    assert args[args.index("--prefill-tokens-per-s") + 1] == "3000,3000"
    assert "--bytes-per-token" not in args
    with pytest.raises(StartupError, match="--scheduler"):
        FleetSettings(2, 16, 100, 3000.0, 20.0, 1.0, scheduler="fifo").sim_args(9000, known)


def test_model_len_grows_to_fit_the_longest_request() -> None:
    request = BenchRequest(0, 0.0, ({"role": "user", "content": "x"},), 64)
    w = Workload("c_long", "t", (request,), "d")
    assert model_len([PromptBlocks(1000, ())], w, 32768) == 32768
    assert model_len([PromptBlocks(70000, ())], w, 32768) == 131072


def test_matrix_parts_and_report() -> None:
    args = build_parser().parse_args(["--skip", "gateways"])
    names = [name for name, _ in parts(args, frozenset({"--scheduler", "--decode-batch-slowdown"}))]
    assert names == ["bpt-3", "bpt-4.5", "bpt-6", "hetero-equal"]
    flags = dict(parts(args, frozenset()))["bpt-6"]
    assert "--scheduler" not in flags
    assert "--decode-batch-slowdown" not in flags
    assert "--quick" in flags
    assert isinstance(args, argparse.Namespace)
    result = {
        "workloads": {
            "a": {
                "plan": {"upper_bound_hit_rate": 0.8},
                "runs": [{"policy": "profile", "repeat": 0, "summary": {
                    **_run(0.1, 0.5), "send_lag_p99_s": 0.2}}],
            }
        }
    }  # fmt: skip
    table = config_table(result)
    assert "profile" in table
    assert "80.0" in table
    assert lag_flags(result, 0.05) == ["a/profile#1 (0.20 s)"]


def test_matrix_checks_drop_policies_left_out_by_design() -> None:
    part = {
        "policies": ["profile", "round_robin"],
        "checks": [
            {"workload": "a", "check": "x", "passed": False,
             "detail": "not computed: policy sglang_threshold not run"},
            {"workload": "a", "check": "y", "passed": False,
             "detail": "not computed: policy profile not run"},
        ],
    }  # fmt: skip
    checks = matrix_checks({"hetero-equal": part})
    assert [c["check"] for c in checks] == ["y"]  # profile was meant to run: a real failure
    assert checks[0]["part"] == "hetero-equal"
