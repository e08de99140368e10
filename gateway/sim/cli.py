"""Command-line front end of the simulated fleet (`prefix-gateway sim ...`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from gateway.sim.config import FLAVORS, SCHEDULERS, FlavorName, SimBackendConfig, SimFaults
from gateway.sim.fleet import (
    SimFleet,
    bind_socket,
    build_backends,
    event_loop_factory,
    socket_url,
)
from gateway.sim.server import SimBackend

T = TypeVar("T")

DESCRIPTION = """\
Serve N simulated vLLM/SGLang/TGI model servers in one process, backend i on port P+i.
Each tokenizes prompts with its own pseudo-BPE tokenizer (--bytes-per-token on average, not
the gateway's 4), keeps a prefix KV cache of token blocks (an LRU; blocks of running requests
are pinned), and schedules like vLLM's v1 engine: steps of at most --max-batched-tokens where
every running request decodes one token and waiting prompts are prefilled in FIFO chunks. A
step lasts prefill_tokens / prefill-tokens-per-s + decode-ms * (1 + decode-batch-slowdown *
(batch - 1)) when it decodes, so time to first token grows with the queue and inter-token
latency with the running batch. Engines report their KV capacity (cache-blocks * block-size
tokens) and start time in their own formats (vLLM vllm:cache_config_info, SGLang
/server_info, TGI 2.x /info) and usage.prompt_tokens_details.cached_tokens.
Speeds take one value or a comma list, one per backend (used cyclically).
"""


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the simulator's flags on a parser (or sub-parser)."""
    d = SimBackendConfig()
    if parser.description is None:
        parser.description = DESCRIPTION
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
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
    g.add_argument(
        "--tgi-version", default=d.tgi_version,
        help=f"TGI release imitated (default {d.tgi_version}; 2.x has max_batch_total_tokens)",
    )  # fmt: skip
    m = parser.add_argument_group("engine model")
    m.add_argument(
        "--prefill-tokens-per-s", "--prefill-tps", dest="prefill_tps",
        default=f"{d.prefill_tokens_per_s:g}", metavar="TPS[,TPS...]",
        help=f"prefill tokens/s, one per backend (default {d.prefill_tokens_per_s:g})",
    )  # fmt: skip
    m.add_argument(
        "--decode-ms", default=f"{d.decode_s_per_token * 1000:g}", metavar="MS[,MS...]",
        help=f"ms per decode step, one per backend (default {d.decode_s_per_token * 1000:g})",
    )  # fmt: skip
    m.add_argument(
        "--decode-batch-slowdown", type=float, default=d.decode_batch_slowdown,
        help="extra decode step time per additional request in the batch, as a fraction "
        f"(default {d.decode_batch_slowdown}; 0 = decode free of batch effects)",
    )  # fmt: skip
    m.add_argument(
        "--scheduler", choices=SCHEDULERS, default=d.scheduler,
        help="batched: vLLM-like steps with chunked prefill (default); fifo: one prefill at a "
        "time, decodes independent (the old model)",
    )  # fmt: skip
    m.add_argument(
        "--max-batched-tokens", type=int, default=d.max_num_batched_tokens,
        help=f"token budget of a step (max_num_batched_tokens; {d.max_num_batched_tokens})",
    )  # fmt: skip
    m.add_argument(
        "--max-num-seqs", type=int, default=d.max_num_seqs,
        help=f"running requests at most (default {d.max_num_seqs})",
    )  # fmt: skip
    m.add_argument(
        "--bytes-per-token", type=float, default=d.bytes_per_token,
        help=f"mean UTF-8 bytes per token of the simulated tokenizer (default {d.bytes_per_token})",
    )  # fmt: skip
    m.add_argument("--time-scale", type=float, default=d.time_scale, help="multiply every delay")
    m.add_argument("--zero-latency", action="store_true", help="no delays at all (time scale 0)")
    m.add_argument(
        "--cache-blocks", type=int, default=d.cache_capacity_blocks,
        help=f"KV cache blocks (default {d.cache_capacity_blocks}); capacity = blocks * block size",
    )  # fmt: skip
    m.add_argument("--block-size", type=int, default=d.block_size, help="tokens per KV block")
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
        bytes_per_token=args.bytes_per_token,
        scheduler=args.scheduler,
        max_num_batched_tokens=args.max_batched_tokens,
        max_num_seqs=args.max_num_seqs,
        decode_batch_slowdown=args.decode_batch_slowdown,
        tgi_version=args.tgi_version,
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
