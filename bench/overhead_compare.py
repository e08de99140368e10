"""Two commits' gateways in front of one simulator, in interleaved rounds: CPU per request.

The full overhead benchmark runs each commit with its own simulator, and machine speed drifts
between runs, so a 5% question drowns in noise. Here both gateways share one zero-latency
simulated backend (of the working tree) and wrk loads each in turn, round after round, so
drift hits both alike; the figure is the gateway process's own CPU time per request, from
/proc, medians over the rounds.

    python bench/overhead_compare.py --before 75ad739 --after HEAD [--rounds 4 --duration 3]

`--after worktree` (the default) measures the checkout as it is, uncommitted changes included;
either side may also name a directory holding a tree of the project.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
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
WORKTREE = "worktree"


@dataclass(frozen=True)
class Request:
    """One kind of request the rounds send."""

    name: str
    stream: bool
    max_tokens: int


REQUESTS = (Request("64-chunk stream", True, 64), Request("non-stream, 8 tokens", False, 8))


def export_tree(ref: str, into: Path) -> Path:
    """The files of commit `ref` under `into` (the checkout itself for `worktree`; a
    directory as it is)."""
    if ref == WORKTREE:
        return REPO
    if Path(ref).is_dir():
        return Path(ref).resolve()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    target = into / ref.replace("/", "_")
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def imported_from(tree: Path) -> Path:
    """Where `python -m gateway` run in `tree` takes the package from (a guard: the editable
    install of the checkout must not shadow the exported commit)."""
    done = subprocess.run(
        [sys.executable, "-c", "import gateway; print(gateway.__file__)"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return Path(done.stdout.strip()).resolve().parent.parent


def one_run(wrk: str, url: str, pid: int, load: WrkLoad, log: Path) -> dict[str, float]:
    """One wrk run against a gateway: its req/s and CPU microseconds per request."""
    before = tree_cpu_seconds(pid)
    result = run_wrk(wrk, f"{url}/v1/chat/completions", load, log)
    cpu = tree_cpu_seconds(pid) - before
    if result.error_total or not result.requests:
        raise SystemExit(f"wrk saw errors or no requests against {url}: {result.errors}")
    return {"rps": result.rps, "cpu_us": cpu / result.requests * 1e6}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every round's figures for both commits."""
    wrk = find_wrk()
    names = {"before": args.before, "after": args.after}
    trees = {side: export_tree(ref, work / "trees") for side, ref in names.items()}
    for side, tree in trees.items():
        if imported_from(tree) != tree.resolve():
            raise SystemExit(f"{side}: python -m gateway in {tree} imports another copy")
    logs = work / "logs"
    logs.mkdir()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        side: {r.name: [] for r in REQUESTS} for side in names
    }
    with (
        Stack(REPO, logs, MODEL) as sim,
        Stack(trees["before"], logs, MODEL) as before_stack,
        Stack(trees["after"], logs, MODEL) as after_stack,
    ):
        timing = ("--decode-ms", str(args.decode_ms)) if args.decode_ms else ("--zero-latency",)
        backend_url, _ = sim.start_backend(timing=timing)
        gateways = {
            "before": before_stack.start_gateway("gw-before", backend_url, None, 1),
            "after": after_stack.start_gateway("gw-after", backend_url, None, 1),
        }
        for round_no in range(args.rounds):
            # Alternate who goes first, so neither always runs on a machine the other warmed.
            order = ("before", "after") if round_no % 2 == 0 else ("after", "before")
            for request in REQUESTS:
                load = WrkLoad(
                    threads=1,
                    connections=args.connections,
                    duration_s=args.duration,
                    timeout_s=10,
                    stream=request.stream,
                    max_tokens=request.max_tokens,
                    model=MODEL,
                )
                for side in order:
                    url, pid = gateways[side]
                    log = logs / f"wrk-{side}-{round_no}-{int(request.stream)}.log"
                    figures = one_run(wrk, url, pid, load, log)
                    runs[side][request.name].append(figures)
                    print(
                        f"round {round_no + 1} {side:6s} {request.name:22s} "
                        f"{figures['rps']:8.0f} req/s {figures['cpu_us']:7.0f} us CPU/request",
                        flush=True,
                    )
    return {"refs": names, "runs": runs, "decode_ms": args.decode_ms}


def summary(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Medians per request kind and commit, and the change from before to after (the median
    of each round's after/before ratio)."""
    rows = []
    for request in REQUESTS:
        medians = {
            side: {
                key: statistics.median(r[key] for r in data["runs"][side][request.name])
                for key in ("rps", "cpu_us")
            }
            for side in ("before", "after")
        }
        # Each round's two runs met the same machine: the change is the median of the rounds'
        # own ratios, which drift across rounds (other jobs starting) does not bias.
        runs = data["runs"]
        pairs = list(zip(runs["before"][request.name], runs["after"][request.name], strict=True))
        rows.append(
            {
                "request": request.name,
                "before": medians["before"],
                "after": medians["after"],
                "cpu_change": statistics.median(a["cpu_us"] / b["cpu_us"] for b, a in pairs) - 1,
                "rps_change": statistics.median(a["rps"] / b["rps"] for b, a in pairs) - 1,
            }
        )
    return rows


def table(refs: dict[str, str], rows: list[dict[str, Any]]) -> str:
    """The medians as a Markdown table."""
    lines = [
        f"| request | {refs['before']} req/s, CPU/request | {refs['after']} req/s, "
        "CPU/request | change CPU, req/s (median of rounds' ratios) |",
        "|---|---|---|---|",
    ]
    for row in rows:
        b, a = row["before"], row["after"]
        lines.append(
            f"| {row['request']} | {b['rps']:,.0f}, {b['cpu_us']:.0f} us | "
            f"{a['rps']:,.0f}, {a['cpu_us']:.0f} us | "
            f"{row['cpu_change']:+.1%}, {row['rps_change']:+.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="commit of the state before")
    parser.add_argument("--after", default=WORKTREE, help="commit after, or `worktree`")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--decode-ms",
        type=float,
        default=0.0,
        help="the simulator's time per token (0: zero latency, a whole stream in one write; "
        "above 0 each token comes in its own block, as from a real engine)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/overhead_compare.json")
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="overhead-compare-") as tmp:
        data = measure(args, Path(tmp))
    rows = summary(data)
    data.update(summary=rows, started=started, rounds=args.rounds, duration_s=args.duration)
    write_json(args.out, data)
    print(table(data["refs"], rows))
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
