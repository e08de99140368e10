"""Soak benchmark: concurrent streams through failing and restarting backends, slow clients beside.

A simulated fleet whose backends fail a share of requests before the first byte (HTTP 500), one
of them killed (SIGKILL) and restarted every `--restart-every` seconds, a gateway in front, and
in one client process: `--streams` workers each sending streamed chat completions back to back,
and `--slow-clients` connections that trickle a head or a body a byte a second, or send nothing.
It records every stream's outcome, the gateway's RSS every second, its open connections, and
its metrics at the end; it checks issue 8's targets and writes JSON (bench/results/soak.json).

    .venv/bin/python bench/soak.py            # 180 s of load
    .venv/bin/python bench/soak.py --quick    # 90 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: `python bench/soak.py`
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import orjson  # noqa: E402

from bench.engines_fleet import samples, total  # noqa: E402
from bench.overhead_stack import gateway_command  # noqa: E402
from bench.procs import LOOPBACK, ChildProcess, free_port_range, wait_until  # noqa: E402
from bench.report import percentile  # noqa: E402
from bench.runutil import run_async, write_json  # noqa: E402
from bench.soak_clients import (  # noqa: E402
    SLOW_KINDS,
    SlowStats,
    StreamLoad,
    StreamStats,
    open_sockets,
    rss_bytes,
    slow_client,
    stream_worker,
)

MODEL = "sim-llama-8b"
RSS_FROM_S = 60.0  # RSS growth is measured from minute 1 (imports, pools and caches warm)
SETTLE_S = 30.0  # how long the end state may take to settle (keep-alive expiry is 4 s)
CLIENT_KEEPALIVE_S = 4.0  # below the gateway's server.keepalive_timeout_s default (5 s)
IDLE_SAMPLE_S = 3.0  # before the load: the probe pool's own upstream connections, sampled
LAG_TICK_S = 0.05  # the client's event-loop lag is how late a sleep of this length wakes
MUST_BE_ZERO = ("error_before_content", "transport_error", "truncated")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--duration", type=float, default=180.0, help="seconds of load (90 with --quick)"
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--streams", type=int, default=200, help="concurrent streaming workers")
    p.add_argument("--slow-clients", type=int, default=300, help="slow and idle connections")
    p.add_argument("--backends", type=int, default=4, help="simulated backends (one restarts)")
    p.add_argument("--error-rate", type=float, default=0.05, help="500 before the first byte")
    p.add_argument("--restart-every", type=float, default=30.0, help="seconds between kills")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--decode-ms", type=float, default=25.0)
    p.add_argument("--groups", type=int, default=64, help="distinct system prompts")
    p.add_argument("--system-bytes", type=int, default=2048)
    p.add_argument(
        "--max-attempts", type=int, default=4,
        help="upstream.max_attempts (4: every backend once; at a 5%% failure rate per attempt "
        "the default 3 leaves 1.25e-4 of requests failing on every attempt)",
    )  # fmt: skip
    p.add_argument("--slow-cap", type=float, default=90.0, help="a slow client gives up after")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/soak.json")
    p.add_argument("--check", action="store_true", help="exit 3 when a target fails")
    args = p.parse_args(argv)
    if args.quick and args.duration == 180.0:
        args.duration = 90.0
    if args.duration <= RSS_FROM_S:
        p.error(f"--duration must exceed {RSS_FROM_S:.0f} s (RSS growth is taken from minute 1)")
    if args.backends < 2:
        p.error("--backends must be at least 2 (one of them restarts)")
    return args


def gateway_config(args: argparse.Namespace, port: int, backend_ports: list[int]) -> bytes:
    """The gateway's config: production defaults except the attempt count and log level."""
    backends = [
        {"id": f"sim-{i}", "url": f"http://{LOOPBACK}:{p}", "engine": "vllm", "models": [MODEL]}
        for i, p in enumerate(backend_ports)
    ]
    config = {
        "server": {"host": LOOPBACK, "port": port, "log_level": "warning"},
        "upstream": {"max_attempts": args.max_attempts},
        "routing": {"policy": "profile"},
        "backends": backends,
    }
    return orjson.dumps(config, option=orjson.OPT_INDENT_2)


def sim_argv(args: argparse.Namespace, port: int, backends: int) -> list[str]:
    """`prefix-gateway sim` for `backends` backends from `port` on, failing before first bytes."""
    return [
        *gateway_command(), "sim", "--backends", str(backends),
        "--base-port", str(port), "--host", LOOPBACK, "--model", MODEL,
        "--decode-ms", str(args.decode_ms), "--error-rate", str(args.error_rate),
    ]  # fmt: skip


def _healthy(url: str) -> bool:
    return httpx.get(f"{url}/health", timeout=1.0).status_code == 200


def scrape(url: str) -> str:
    """The gateway's Prometheus text."""
    return httpx.get(f"{url}/metrics", timeout=5.0).text


def by_label(text: str, name: str, label: str) -> dict[str, float]:
    """The samples called `name`, summed per value of one label."""
    out: Counter[str] = Counter()
    for labels, value in samples(text, name):
        out[labels.get(label, "")] += value
    return dict(out)


class Soak:
    """Owns the child processes and runs the load; every child is stopped by its pid."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack, log_dir: Path) -> None:
        self.args = args
        self.stack = stack
        self.log_dir = log_dir
        n = args.backends
        base = free_port_range(n + 1)
        self.gateway_port = base + n
        self.backend_ports = list(range(base, base + n))
        self.restart_port = self.backend_ports[-1]
        self.restart_id = f"sim-{n - 1}"
        self.restarts: list[dict[str, float]] = []
        self.rss: list[tuple[float, int]] = []
        self.sockets: list[tuple[float, dict[str, int]]] = []
        self.idle_upstream = 0
        self.lag_s: list[float] = []

    def _child(self, name: str, argv: list[str]) -> ChildProcess:
        child = ChildProcess(name, argv, self.log_dir / f"{name}.log", REPO)
        self.stack.callback(child.stop)
        return child

    def start(self) -> None:
        """The steady backends, the restarting one, and the gateway, each ready."""
        a = self.args
        steady = self._child("sim-steady", sim_argv(a, self.backend_ports[0], a.backends - 1))
        for port in self.backend_ports[:-1]:
            wait_until(lambda p=port: _healthy(f"http://{LOOPBACK}:{p}"), steady, 60)
        self.restarting = self._start_restarting(0)
        config = self.log_dir / "gateway.json"
        config.write_bytes(gateway_config(a, self.gateway_port, self.backend_ports))
        argv = [*gateway_command(), "serve", "--config", str(config)]
        self.gateway = self._child("gateway", argv)
        self.url = f"http://{LOOPBACK}:{self.gateway_port}"

        def ready() -> bool:
            response = httpx.get(f"{self.url}/readyz", timeout=1.0)
            body = orjson.loads(response.content) if response.status_code == 200 else {}
            return body.get("healthy_backends") == a.backends

        wait_until(ready, self.gateway, 60, poll_s=0.2)
        # Health probes and load scrapes keep their own pool's connections alive with no
        # traffic at all: those are what "back to idle" is measured against.
        ports = set(self.backend_ports)
        deadline = time.monotonic() + IDLE_SAMPLE_S
        while time.monotonic() < deadline:
            found = open_sockets(self.gateway.pid, self.gateway_port, ports)["upstream"]
            self.idle_upstream = max(self.idle_upstream, found)
            time.sleep(0.2)

    def _start_restarting(self, generation: int) -> ChildProcess:
        child = self._child(
            f"sim-restarting-{generation}", sim_argv(self.args, self.restart_port, 1)
        )
        wait_until(lambda: _healthy(f"http://{LOOPBACK}:{self.restart_port}"), child, 60)
        return child

    async def restarter(self, t0: float, deadline: float) -> None:
        """Kill the restarting backend every period and start it again at once."""
        generation = 0
        while True:
            await asyncio.sleep(self.args.restart_every)
            if time.monotonic() >= deadline - 5:
                return
            generation += 1
            killed = time.monotonic()
            await asyncio.to_thread(self.restarting.kill)
            self.restarting = await asyncio.to_thread(self._start_restarting, generation)
            self.restarts.append(
                {"killed_at_s": round(killed - t0, 2),
                 "down_s": round(time.monotonic() - killed, 2)}
            )  # fmt: skip

    async def monitor(self, t0: float, stop: asyncio.Event) -> None:
        """The gateway's RSS and open connections, every second."""
        while not stop.is_set():
            now = time.monotonic() - t0
            rss = rss_bytes(self.gateway.pid)
            if rss is not None:
                self.rss.append((now, rss))
            ports = set(self.backend_ports)
            self.sockets.append((now, open_sockets(self.gateway.pid, self.gateway_port, ports)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def lag(self, stop: asyncio.Event) -> None:
        """How late the client's own event loop runs: a late client inflates its TTFB."""
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            self.lag_s.append(time.monotonic() - before - LAG_TICK_S)

    async def load(self) -> tuple[StreamStats, SlowStats, float]:
        """Run the streams, slow clients, restarts and monitor until the deadline."""
        a = self.args
        t0 = time.monotonic()
        deadline = t0 + a.duration
        streams, slow = StreamStats(), SlowStats()
        load = StreamLoad(
            url=f"{self.url}/v1/chat/completions", model=MODEL, max_tokens=a.max_tokens,
            groups=a.groups, system_bytes=a.system_bytes, deadline=deadline,
            max_requests_per_worker=100_000,
        )  # fmt: skip
        # Pooled connections expire before the gateway closes them idle (its
        # server.keepalive_timeout_s, 5 s), as the gateway's own pool does towards engines:
        # httpx's default expiry is the same 5 s, so a connection could be reused just as the
        # gateway closed it, and a POST on it fails with no answer.
        limits = httpx.Limits(
            max_connections=a.streams,
            max_keepalive_connections=a.streams,
            keepalive_expiry=CLIENT_KEEPALIVE_S,
        )
        timeout = httpx.Timeout(120.0, connect=10.0)
        stop = asyncio.Event()
        monitor = asyncio.create_task(self.monitor(t0, stop))
        restarter = asyncio.create_task(self.restarter(t0, deadline))
        lag = asyncio.create_task(self.lag(stop))
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            tasks = [
                *(stream_worker(client, load, streams, seed, t0) for seed in range(a.streams)),
                *(
                    slow_client(LOOPBACK, self.gateway_port, SLOW_KINDS[i % len(SLOW_KINDS)],
                                slow, deadline, a.slow_cap)
                    for i in range(a.slow_clients)
                ),
            ]  # fmt: skip
            await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        restarter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await restarter
        stop.set()
        await monitor
        await lag
        return streams, slow, elapsed

    def settle(self) -> dict[str, Any]:
        """Wait (bounded) until in-flight requests and connections are back to zero."""
        start = time.monotonic()
        ports = set(self.backend_ports)
        while True:
            metrics = scrape(self.url)
            in_flight = total(metrics, "gateway_backend_in_flight")
            sockets = open_sockets(self.gateway.pid, self.gateway_port, ports)
            # The scrape's own connection is closed by now (httpx.get does not keep it).
            settled = sockets["client"] == 0 and sockets["upstream"] <= self.idle_upstream
            settled = settled and in_flight == 0
            waited = time.monotonic() - start
            if settled or waited >= SETTLE_S:
                return {
                    "in_flight": in_flight, "sockets": sockets, "settled": settled,
                    "waited_s": round(waited, 1), "metrics": metrics,
                }  # fmt: skip
            time.sleep(0.5)


def _mean_of(text: str, histogram: str) -> float:
    """A Prometheus histogram's mean over every label set (nan without observations)."""
    count = total(text, f"{histogram}_count")
    return total(text, f"{histogram}_sum") / count if count else math.nan


def summarize(
    soak: Soak, streams: StreamStats, slow: SlowStats, elapsed: float, end: dict[str, Any]
) -> dict[str, Any]:
    """Figures and checks of one soak run."""
    a = soak.args
    m = end.pop("metrics")
    rss_after = [r for t, r in soak.rss if t >= RSS_FROM_S]
    rss_start, rss_end = (rss_after[0], rss_after[-1]) if rss_after else (0, 0)
    growth = (rss_end - rss_start) / rss_start if rss_start else math.nan
    done = sum(streams.outcomes.values())
    midstream_elsewhere = sum(
        n for b, n in streams.midstream_by_backend.items() if b != soak.restart_id
    )
    peak_sockets = max((s["client"] for _, s in soak.sockets), default=0)
    attempts = by_label(m, "gateway_upstream_attempts_total", "outcome")
    checks = [
        ("no client-visible error for failures before the first byte",
         sum(streams.outcomes[k] for k in MUST_BE_ZERO)
         + sum(n for k, n in streams.outcomes.items() if k.startswith("status_")) == 0),
        ("mid-stream errors only on the killed backend", midstream_elsewhere == 0),
        ("RSS growth from minute 1 to the end < 10%", growth < 0.10),
        ("in flight back to 0 at the end", end["in_flight"] == 0),
        ("client connections back to 0, upstream back to the idle probe pool's",
         end["settled"]),
        ("no slow client outlived its cap", sum(slow.outlived_cap.values()) == 0),
        ("no unexpected errors", total(m, "gateway_unexpected_errors_total") == 0),
        ("backend failures were injected and retried", attempts.get("status_500", 0) > 0),
    ]  # fmt: skip
    return {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "elapsed_s": round(elapsed, 1),
        "streams": {
            "requests": done,
            "per_s": round(done / elapsed, 1),
            "outcomes": dict(streams.outcomes),
            "midstream_errors_by_backend": dict(streams.midstream_by_backend),
            "ttfb_p50_s": percentile(streams.ttfb_s, 50),
            "ttfb_p99_s": percentile(streams.ttfb_s, 99),
            "gateway_ttfb_mean_s": _mean_of(m, "gateway_time_to_first_byte_seconds"),
            "client_loop_lag_p50_s": percentile(soak.lag_s, 50),
            "client_loop_lag_p99_s": percentile(soak.lag_s, 99),
            "first_failures": streams.failures,
        },
        "slow_clients": {
            "connections": dict(slow.connections),
            "answered": dict(slow.answered),
            "closed_silently": dict(slow.closed_silently),
            "refused": dict(slow.refused),
            "held_max_s": {k: round(v, 1) for k, v in slow.held_max_s.items()},
            "outlived_cap": dict(slow.outlived_cap),
        },
        "restarts": soak.restarts,
        "rss": {
            "from_s": RSS_FROM_S,
            "start_bytes": rss_start,
            "end_bytes": rss_end,
            "max_bytes": max((r for _, r in soak.rss), default=0),
            "growth": growth,
            "samples": [(round(t, 1), r) for t, r in soak.rss[:: max(1, len(soak.rss) // 60)]],
        },
        "connections": {
            "peak_client": peak_sockets,
            "end": end["sockets"],
            "idle_upstream_before_load": soak.idle_upstream,
        },
        "end": end,
        "gateway_metrics": {
            "upstream_attempts_by_outcome": attempts,
            "requests_by_status": by_label(m, "gateway_requests_total", "status"),
            "stream_errors": total(m, "gateway_stream_errors_total"),
            "client_disconnects": total(m, "gateway_client_disconnects_total"),
            "client_refusals_by_reason": by_label(m, "gateway_client_refusals_total", "reason"),
            "breaker_opened": total(m, "gateway_backend_circuit_opens_total"),
            "backend_restarts": total(m, "gateway_backend_restarts_total"),
            "unexpected_errors": total(m, "gateway_unexpected_errors_total"),
        },
        "checks": [{"check": name, "pass": ok} for name, ok in checks],
        "all_checks_passed": all(ok for _, ok in checks),
    }


def print_report(result: dict[str, Any]) -> None:
    """A short plain-text report."""
    s, sl, r = result["streams"], result["slow_clients"], result["rss"]
    g = result["gateway_metrics"]
    print(f"\nsoak: {result['elapsed_s']} s, {s['requests']} streams ({s['per_s']}/s)")
    print(f"  outcomes: {s['outcomes']}")
    print(f"  mid-stream errors by backend: {s['midstream_errors_by_backend']}")
    print(f"  time to first byte p50 {s['ttfb_p50_s']:.3f} s, p99 {s['ttfb_p99_s']:.3f} s "
          f"(the gateway's own mean {s['gateway_ttfb_mean_s']:.3f} s; client loop lag p50 "
          f"{s['client_loop_lag_p50_s'] * 1e3:.1f} ms, p99 "
          f"{s['client_loop_lag_p99_s'] * 1e3:.1f} ms)")  # fmt: skip
    print(f"  upstream attempts: {g['upstream_attempts_by_outcome']}")
    down = statistics.mean([x["down_s"] for x in result["restarts"]] or [0])
    print(f"  restarts: {len(result['restarts'])}, down {down:.2f} s each; seen by the gateway "
          f"{g['backend_restarts']:.0f}, breaker opened {g['breaker_opened']:.0f}")  # fmt: skip
    print(f"  slow clients: connections {sl['connections']}, answered {sl['answered']}, "
          f"closed silently {sl['closed_silently']}, held max {sl['held_max_s']} s")  # fmt: skip
    print(f"  refusals: {g['client_refusals_by_reason']}")
    print(f"  RSS: {r['start_bytes'] / 2**20:.1f} MiB at {r['from_s']:.0f} s -> "
          f"{r['end_bytes'] / 2**20:.1f} MiB at the end ({r['growth'] * 100:+.1f}%), "
          f"max {r['max_bytes'] / 2**20:.1f} MiB")  # fmt: skip
    e = result["end"]
    c = result["connections"]
    print(f"  end: in flight {e['in_flight']:.0f}, sockets {e['sockets']} after {e['waited_s']} s "
          f"(upstream before the load: {c['idle_upstream_before_load']}); "
          f"peak client connections {c['peak_client']}")  # fmt: skip
    for c in result["checks"]:
        print(f"  {'PASS' if c['pass'] else 'FAIL'}  {c['check']}")


def main(argv: list[str] | None = None) -> int:
    """Run one soak; 0 when clean, 3 with --check when a target fails."""
    args = parse_args(argv)
    log_dir = args.out.parent / "logs" / args.out.stem
    log_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        soak = Soak(args, stack, log_dir)
        soak.start()
        print(f"gateway {soak.url}, backends {soak.backend_ports} "
              f"({soak.restart_id} restarts every {args.restart_every:.0f} s); "
              f"{args.duration:.0f} s of load", flush=True)  # fmt: skip
        streams, slow, elapsed = run_async(soak.load())
        end = soak.settle()
        result = summarize(soak, streams, slow, elapsed, end)
    write_json(args.out, result)
    print_report(result)
    print(f"\nwrote {args.out}")
    return 3 if args.check and not result["all_checks_passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
