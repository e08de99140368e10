"""Command-line front end of the simulated fleet (`prefix-gateway sim ...`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from gateway.sim.config import FLAVORS, FlavorName, SimBackendConfig, SimFaults
from gateway.sim.fleet import (
    SimFleet,
    bind_socket,
    build_backends,
    event_loop_factory,
    socket_url,
)
from gateway.sim.server import SimBackend

T = TypeVar("T")


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the simulator's flags on a parser (or sub-parser)."""
    d = SimBackendConfig()
    g = parser.add_argument_group("fleet")
    g.add_argument("--backends", type=int, default=4, help="number of backends (default 4)")
    g.add_argument("--base-port", type=int, default=8001, help="backend i listens on P+i")
    g.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    g.add_argument(
        "--flavor", default="vllm",
        help="vllm|sglang|tgi, or a comma list used cyclically (e.g. vllm,sglang,tgi)",
    )  # fmt: skip
    g.add_argument("--model", default=d.model, help=f"served model name (default {d.model})")
    g.add_argument("--max-model-len", type=int, default=d.max_model_len)
    g.add_argument("--seed", type=int, default=d.seed)
    m = parser.add_argument_group("engine model")
    m.add_argument(
        "--prefill-tps", default=str(d.prefill_tokens_per_s),
        help="prefill tokens/s; a comma list is used cyclically (heterogeneous hardware)",
    )  # fmt: skip
    m.add_argument(
        "--decode-ms", default=str(d.decode_s_per_token * 1000),
        help="ms per generated token; a comma list is used cyclically",
    )  # fmt: skip
    m.add_argument("--time-scale", type=float, default=d.time_scale, help="multiply every delay")
    m.add_argument("--zero-latency", action="store_true", help="no delays at all (time scale 0)")
    m.add_argument("--cache-blocks", type=int, default=d.cache_capacity_blocks)
    m.add_argument("--block-size", type=int, default=d.block_size)
    m.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens)
    m.add_argument(
        "--no-cached-tokens", action="store_true",
        help="do not report usage.prompt_tokens_details.cached_tokens",
    )  # fmt: skip
    f = parser.add_argument_group("faults")
    f.add_argument("--error-rate", type=float, default=0.0, help="500 before the first byte")
    f.add_argument("--status-429-rate", type=float, default=0.0)
    f.add_argument("--status-503-rate", type=float, default=0.0)
    f.add_argument("--abort-rate", type=float, default=0.0, help="close connection mid-stream")
    f.add_argument("--midstream-error-rate", type=float, default=0.0)
    f.add_argument("--slow-first-token", type=float, default=0.0, help="extra seconds (wall)")
    f.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds, 0 = none")
    f.add_argument("--loading", action="store_true", help="start in loading state (503)")
    f.add_argument("--tgi-keepalive", action="store_true", help="TGI ':' keep-alive comments")
    f.add_argument("--tgi-no-space", action="store_true", help="TGI 'data:' without a space")


def _cycle(text: str, convert: Callable[[str], T], n: int) -> list[T]:
    values = [convert(part) for part in text.split(",") if part.strip()]
    if not values:
        raise ValueError(f"empty list: {text!r}")
    return [values[i % len(values)] for i in range(n)]


def _flavor(name: str) -> FlavorName:
    name = name.strip()
    if name not in FLAVORS:
        raise ValueError(f"unknown flavor {name!r} (choose from {', '.join(FLAVORS)})")
    return name


def backends_from_args(args: argparse.Namespace) -> list[SimBackend]:
    """Build the backends described by parsed flags."""
    n = args.backends
    if n < 1:
        raise ValueError("--backends must be >= 1")
    base = SimBackendConfig(
        model=args.model,
        max_model_len=args.max_model_len,
        block_size=args.block_size,
        cache_capacity_blocks=args.cache_blocks,
        time_scale=0.0 if args.zero_latency else args.time_scale,
        default_max_tokens=args.default_max_tokens,
        report_cached_tokens=not args.no_cached_tokens,
        seed=args.seed,
    )
    faults = SimFaults(
        error_rate=args.error_rate,
        status_429_rate=args.status_429_rate,
        status_503_rate=args.status_503_rate,
        abort_midstream_rate=args.abort_rate,
        midstream_error_rate=args.midstream_error_rate,
        slow_first_token_s=args.slow_first_token,
        loading=args.loading,
        tgi_keepalive=args.tgi_keepalive,
        tgi_no_space=args.tgi_no_space,
        retry_after_s=args.retry_after,
    )
    backends = build_backends(n, _cycle(args.flavor, _flavor, n), base, faults)
    prefill = _cycle(args.prefill_tps, float, n)
    decode = _cycle(args.decode_ms, float, n)
    for i, backend in enumerate(backends):
        config = dataclasses.replace(
            backend.config, prefill_tokens_per_s=prefill[i], decode_s_per_token=decode[i] / 1000
        )
        backends[i] = SimBackend(config, backend.faults)
    return backends


def run_sim(args: argparse.Namespace) -> int:
    """Serve the fleet until Ctrl-C or SIGTERM; returns the exit status."""
    try:
        backends = backends_from_args(args)
        sockets = [bind_socket(args.host, args.base_port + i) for i in range(len(backends))]
    except (ValueError, OSError) as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 2
    fleet = SimFleet(backends)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, fleet.request_shutdown)
        for backend, sock in zip(backends, sockets, strict=True):
            c = backend.config
            print(f"{c.backend_id} {c.flavor} {c.model} {socket_url(sock)}", flush=True)
        await fleet.serve(sockets=sockets)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())
    return 0
