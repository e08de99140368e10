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
    "argv", [("--flavor", "openai"), ("--error-rate", "2"), ("--backends", "0")]
)
def test_invalid_flags(argv: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - message varies per flag
        backends_from_args(parse(*argv))


def test_build_backends_seeds_and_faults() -> None:
    backends = build_backends(2, "sglang", SimBackendConfig(seed=7), SimFaults(loading=True))
    assert [b.config.seed for b in backends] == [7, 8]
    assert all(b.faults.loading for b in backends)
