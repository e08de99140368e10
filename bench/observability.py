"""Overhead of the metrics catalog, cache accounting and access log on non-stream throughput.

One zero-latency simulated backend; gateways (one worker, memory index) in front of it, each
loaded closed-loop by wrk in turn, round after round: this tree with pricing and the access log
on (lines to the child's log file), this tree with the access log off, this tree with tracing
on (every new trace sampled, or one in ten; spans exported over OTLP/HTTP to a sink in this
process that answers 200), and, with `--baseline-rev`, the same requests through a checkout of
that revision (a temporary git worktree; `--baseline-like VARIANT` gives it that variant's
configuration, e.g. to time tracing off against a revision without tracing). Per gateway:
requests/s and the gateway process's CPU per request (/proc), as medians over the rounds, and
each one's ratio to the baseline.

    flock /tmp/pgw-heavy.lock .venv/bin/python bench/observability.py --baseline-rev REV
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.overhead_cpu import tree_cpu_seconds  # noqa: E402
from bench.overhead_stack import Stack  # noqa: E402
from bench.overhead_wrk import WrkLoad, find_wrk, run_wrk  # noqa: E402
from bench.runutil import write_json  # noqa: E402

MODEL = "sim-llama-8b"
PRICING = json.dumps({MODEL: {"input": 3, "cache_read": 0.3, "cache_write": 3.75, "output": 15}})
BASELINE = "baseline"


def variants(otlp_url: str) -> dict[str, dict[str, str]]:
    """name -> environment overrides of its config (GATEWAY_<SECTION>__<FIELD>)."""
    traced = {
        "GATEWAY_PRICING": PRICING,
        "GATEWAY_TRACING__ENABLED": "true",
        "GATEWAY_TRACING__OTLP_ENDPOINT": otlp_url,
    }
    return {
        "accounting + access log": {"GATEWAY_PRICING": PRICING},
        "accounting, access log off": {
            "GATEWAY_PRICING": PRICING,
            "GATEWAY_ACCESS_LOG__ENABLED": "false",
        },
        "tracing on, all sampled": traced,
        "tracing on, 1 in 10": {**traced, "GATEWAY_TRACING__SAMPLE_RATIO": "0.1"},
    }


class _SinkHandler(BaseHTTPRequestHandler):
    """Reads an OTLP export and answers 200 with an empty (valid) protobuf response."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP traces URL on loopback that takes every export."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SinkHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ (inherited by the children started meanwhile)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A temporary worktree of `rev`, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pgw-baseline-") as tmp:
        path = Path(tmp) / "tree"
        git = ["git", "-C", str(REPO)]
        subprocess.run([*git, "worktree", "add", "--detach", str(path), rev], check=True)
        try:
            yield path
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)


def one_run(wrk: str, url: str, pid: int, load: WrkLoad, log: Path) -> dict[str, float]:
    """req/s and the gateway's CPU microseconds per request of one wrk run."""
    cpu0 = tree_cpu_seconds(pid)
    result = run_wrk(wrk, f"{url}/v1/chat/completions", load, log)
    cpu = tree_cpu_seconds(pid) - cpu0
    if result.error_total or not result.requests:
        raise SystemExit(f"wrk saw errors or no requests: {result.errors}")
    return {"rps": result.rps, "gateway_cpu_us": cpu / result.requests * 1e6}


def measure(
    args: argparse.Namespace, work: Path, tree: Path, baseline: Path | None
) -> dict[str, Any]:
    """Every round's figures per gateway."""
    wrk = find_wrk()
    load = WrkLoad(
        threads=1,
        connections=args.connections,
        duration_s=args.duration,
        timeout_s=10,
        stream=False,
        max_tokens=8,
        model=MODEL,
    )
    gateways: dict[str, tuple[str, int]] = {}
    with (
        otlp_sink() as otlp_url,
        Stack(tree, work, MODEL) as stack,
        Stack(baseline or tree, work, MODEL) as old,
    ):
        chosen = variants(otlp_url)
        if args.variants:
            chosen = {name: chosen[name] for name in args.variants}
        backend_url, _ = stack.start_backend()
        for name, overrides in chosen.items():
            with environment(overrides):
                gateways[name] = stack.start_gateway(_slug(name), backend_url, None, 1)
        if baseline is not None:
            like = variants(otlp_url)[args.baseline_like] if args.baseline_like else {}
            with environment(like):
                gateways[BASELINE] = old.start_gateway(BASELINE, backend_url, None, 1)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in gateways}
        for round_no in range(args.rounds):
            for name, (url, pid) in gateways.items():
                log = work / f"wrk-{round_no}-{_slug(name)}.log"
                figures = one_run(wrk, url, pid, load, log)
                rounds[name].append(figures)
                print(
                    f"round {round_no + 1} {name:28s} {figures['rps']:7.0f} req/s "
                    f"{figures['gateway_cpu_us']:5.0f} us CPU/request",
                    flush=True,
                )
    return {"rounds": rounds}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def summarise(rounds: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Medians per gateway, and ratios to the baseline where there is one."""
    summary = {
        name: {key: statistics.median(r[key] for r in runs) for key in ("rps", "gateway_cpu_us")}
        for name, runs in rounds.items()
    }
    base = summary.get(BASELINE)
    if base is not None:
        for figures in summary.values():
            figures["rps_vs_baseline"] = figures["rps"] / base["rps"]
            figures["cpu_vs_baseline"] = figures["gateway_cpu_us"] / base["gateway_cpu_us"]
    return summary


def table(summary: dict[str, dict[str, float]]) -> str:
    """The summary as a text table."""
    lines = [f"{'gateway':28s} {'req/s':>8s} {'CPU us/req':>11s} {'req/s ratio':>12s}"]
    for name, figures in summary.items():
        ratio = figures.get("rps_vs_baseline")
        shown = f"{ratio:12.3f}" if ratio is not None else f"{'-':>12s}"
        lines.append(f"{name:28s} {figures['rps']:8.0f} {figures['gateway_cpu_us']:11.0f} {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--baseline-rev", help="a git revision to compare against")
    parser.add_argument("--rev", help="measure this revision instead of the working tree")
    names = list(variants(""))
    parser.add_argument(
        "--variants", nargs="+", choices=names, help="measure only these (default: all)"
    )
    parser.add_argument(
        "--baseline-like", choices=names, help="start the baseline with this variant's config"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "observability.json"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pgw-observability-") as tmp, ExitStack() as trees:
        tree = trees.enter_context(checkout(args.rev)) if args.rev else REPO
        baseline = trees.enter_context(checkout(args.baseline_rev)) if args.baseline_rev else None
        data = measure(args, Path(tmp), tree, baseline)
    data["summary"] = summarise(data["rounds"])
    data["rev"] = args.rev or "working tree"
    data["baseline_rev"] = args.baseline_rev
    data["baseline_like"] = args.baseline_like
    write_json(args.out, data)
    print(table(data["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
