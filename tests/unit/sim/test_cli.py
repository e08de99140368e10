"""Simulator command-line flags and fleet construction."""

from __future__ import annotations

import argparse

import pytest

from gateway.sim.cli import add_sim_arguments, backends_from_args
from gateway.sim.config import SimBackendConfig, SimFaults
from gateway.sim.fleet import build_backends


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    args = parse()
    assert (args.backends, args.base_port, args.host, args.flavor) == (4, 8001, "127.0.0.1", "vllm")
    backends = backends_from_args(args)
    assert [b.backend_id for b in backends] == ["sim-0", "sim-1", "sim-2", "sim-3"]
    assert backends[0].config == SimBackendConfig(backend_id="sim-0")


def test_flags_build_heterogeneous_backends() -> None:
    args = parse(
        "--backends", "3", "--flavor", "vllm,tgi", "--prefill-tps", "1000,2000",
        "--decode-ms", "5", "--zero-latency", "--error-rate", "0.5", "--no-cached-tokens",
        "--block-size", "32", "--model", "m",
    )  # fmt: skip
    backends = backends_from_args(args)
    assert [b.config.flavor for b in backends] == ["vllm", "tgi", "vllm"]
    assert [b.config.prefill_tokens_per_s for b in backends] == [1000.0, 2000.0, 1000.0]
    assert {b.config.decode_s_per_token for b in backends} == {0.005}
    assert {b.config.time_scale for b in backends} == {0.0}
    assert all(b.faults.error_rate == 0.5 for b in backends)
    assert backends[0].faults is not backends[1].faults
    assert (backends[2].config.block_size, backends[2].config.model) == (32, "m")
    assert not backends[1].config.report_cached_tokens


@pytest.mark.parametrize(
    "argv",
    [
        ("--flavor", "openai"),
        ("--error-rate", "2"),
        ("--backends", "0"),
        ("--bytes-per-token", "0.5"),
        ("--max-batched-tokens", "0"),
        ("--prefill-tps", "1,x"),
    ],
)
def test_invalid_flags(argv: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - message varies per flag
        backends_from_args(parse(*argv))


def test_build_backends_seeds_and_faults() -> None:
    backends = build_backends(2, "sglang", SimBackendConfig(seed=7), SimFaults(loading=True))
    assert [b.config.seed for b in backends] == [7, 8]
    assert all(b.faults.loading for b in backends)


def test_engine_model_flags() -> None:
    args = parse(
        "--backends", "2", "--bytes-per-token", "3.5", "--scheduler", "fifo",
        "--max-batched-tokens", "512", "--max-num-seqs", "8", "--decode-batch-slowdown", "0",
        "--tgi-version", "2.4.1",
    )  # fmt: skip
    config = backends_from_args(args)[1].config
    assert (config.bytes_per_token, config.scheduler) == (3.5, "fifo")
    assert (config.max_num_batched_tokens, config.max_num_seqs) == (512, 8)
    assert (config.decode_batch_slowdown, config.tgi_version) == (0.0, "2.4.1")
    assert backends_from_args(args)[1].engine.tokenizer.bytes_per_token == 3.5


def test_new_defaults_differ_from_the_gateways_assumptions() -> None:
    config = backends_from_args(parse("--backends", "1"))[0].config
    assert config.bytes_per_token == 4.4
    assert config.scheduler == "batched"
    assert config.max_num_batched_tokens == 2048
    assert config.max_num_seqs == 256
    assert config.decode_batch_slowdown == 0.03


@pytest.mark.parametrize("flag", ["--prefill-tokens-per-s", "--prefill-tps"])
def test_per_backend_speeds(flag: str) -> None:
    args = parse("--backends", "4", flag, "1000,2000,4000,8000", "--decode-ms", "10,40")
    backends = backends_from_args(args)
    assert [b.config.prefill_tokens_per_s for b in backends] == [1000, 2000, 4000, 8000]
    assert [b.config.decode_s_per_token for b in backends] == [0.01, 0.04, 0.01, 0.04]
    assert [b.engine.prefill_s_per_token for b in backends] == [1e-3, 5e-4, 2.5e-4, 1.25e-4]
    one = backends_from_args(parse("--backends", "3", flag, "500"))
    assert {b.config.prefill_tokens_per_s for b in one} == {500.0}


def test_help_describes_the_engine_model() -> None:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    text = parser.format_help()
    for needle in (
        "--bytes-per-token", "--scheduler", "--max-batched-tokens", "--decode-batch-slowdown",
        "--prefill-tokens-per-s", "one per backend", "chunks",
    ):  # fmt: skip
        assert needle in text, needle
