"""Calibration matrix: routing_quality over tokenizer ratios, a 1x/2x fleet and two gateways.

Run `python bench/calibration_matrix.py --help`; see bench/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import contextlib
import fcntl
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import orjson
import redis

from bench.harness import sim_flags
from bench.matrix_report import matrix_checks, print_matrix
from bench.procs import LOOPBACK, ChildProcess, StartupError, free_port_range, wait_until

REPO = Path(__file__).resolve().parent.parent
_PART_TIMEOUT_S = 40 * 60
SCRIPT = REPO / "bench" / "routing_quality.py"


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(prog="calibration_matrix", description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="full workload sizes (default --quick)")
    p.add_argument("--bytes-per-token", default="3,4.5,6", help="tokenizer ratios to run")
    p.add_argument("--workloads", default="a,b,c,c_long,d,e")
    p.add_argument("--policies", default="profile,sglang_threshold,round_robin")
    p.add_argument("--decode-batch-slowdown", type=float, default=0.02)
    p.add_argument("--scheduler", default="batched", help="passed when the simulator has it")
    p.add_argument("--speeds", default="1,1,1,1,2,2,2,2", help="the heterogeneous fleet")
    p.add_argument("--hetero-workloads", default="a,e")
    p.add_argument("--skip", default="", help="parts to leave out: ratios,hetero,gateways")
    p.add_argument("--redis-url", default=None, help="else a private redis-server is started")
    p.add_argument("--lock", type=Path, default=None, help="flock this file around each part")
    p.add_argument("--max-minutes", type=float, default=45.0, help="start no part after this")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/calibration_matrix.json")
    p.add_argument("--report", type=Path, default=None, help="only print a merged JSON's tables")
    return p


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parts(args: argparse.Namespace, known: frozenset[str]) -> list[tuple[str, list[str]]]:
    """(name, routing_quality flags) of every configuration, in run order."""
    skip = set(_csv(args.skip))
    sim: list[str] = []
    if "--decode-batch-slowdown" in known:
        sim += ["--decode-batch-slowdown", str(args.decode_batch_slowdown)]
    if "--scheduler" in known:
        sim += ["--scheduler", args.scheduler]
    size = [] if args.full else ["--quick"]
    out: list[tuple[str, list[str]]] = []
    if "ratios" not in skip:
        for bpt in _csv(args.bytes_per_token):
            flags = ["--bytes-per-token", bpt, "--kv-told", "true", *sim]
            flags += ["--workloads", args.workloads, "--policies", args.policies, *size]
            out.append((f"bpt-{bpt}", flags))
    if "hetero" not in skip:
        flags = ["--speeds", args.speeds, "--tell-speeds", "equal", "--kv-told", "true", *sim]
        flags += ["--workloads", args.hetero_workloads, *size]
        flags += ["--policies", "profile,round_robin,least_loaded"]
        out.append(("hetero-equal", flags))
    if "gateways" not in skip:
        for n in (1, 2):
            flags = ["--index", "redis", "--gateways", str(n), "--kv-told", "true", *sim]
            flags += ["--workloads", "a", "--policies", "profile", "--repeat", "2", *size]
            out.append((f"gateways-{n}", flags))
    return out


@contextlib.contextmanager
def locked(path: Path | None) -> Iterator[None]:
    """Hold an exclusive flock on `path` (no-op without one)."""
    if path is None:
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def private_redis(url: str | None, workdir: Path) -> Iterator[str]:
    """The given Redis URL, or a throwaway redis-server on a free loopback port."""
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH: pass --redis-url or --skip gateways")
    port = free_port_range(1)
    argv = [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
    child = ChildProcess("redis", argv, workdir / "redis.log", REPO)
    try:
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=1.0)
        wait_until(lambda: bool(client.ping()), child, timeout_s=20)
        client.close()
        yield f"redis://{LOOPBACK}:{port}/0"
    except redis.RedisError as exc:
        raise StartupError(f"redis-server did not answer: {exc}") from exc
    finally:
        child.stop()


def run_part(name: str, flags: Sequence[str], out_dir: Path, lock: Path | None) -> dict[str, Any]:
    """One routing_quality invocation; returns its JSON (or a failure record)."""
    out = out_dir / f"{name}.json"
    argv = [sys.executable, str(SCRIPT), *flags, "--out", str(out)]
    print(f"\n######## {name}: {' '.join(flags)}", flush=True)
    started = time.monotonic()
    with locked(lock):
        waited = time.monotonic() - started
        returncode = _run_child(argv)
    wall = time.monotonic() - started - waited
    try:
        result: dict[str, Any] = orjson.loads(out.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        result = {"failed": f"no result: {exc}"}
    result.update(matrix_part=name, exit_status=returncode, wall_s=wall, lock_wait_s=waited)
    return result


def _run_child(argv: Sequence[str], timeout_s: float = _PART_TIMEOUT_S) -> int:
    """Run one part; on timeout or Ctrl-C/SIGTERM, SIGTERM that child (it stops its own)."""
    child = subprocess.Popen(list(argv), cwd=REPO)
    try:
        return child.wait(timeout=timeout_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        child.terminate()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        raise


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run every part, print a table per part and every check, write one JSON."""
    args = build_parser().parse_args(argv)
    if args.report is not None:
        merged = orjson.loads(args.report.read_bytes())
        parts_ = merged.get("parts", {})
        print_matrix(parts_, matrix_checks(parts_), merged.get("wall_s", 0.0), merged["skipped"])
        return 0
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    signal.signal(signal.SIGTERM, _terminate)
    known = sim_flags(REPO)
    out_dir = args.out.parent / args.out.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    todo = parts(args, known)
    missing = [f for f in ("--scheduler", "--decode-batch-slowdown", "--bytes-per-token")
               if f not in known]  # fmt: skip
    if missing:
        print(f"!! this simulator has no {', '.join(missing)}: parts run without them")
    interrupted = False
    redis_url: str | None = None
    with contextlib.ExitStack() as stack:
        for name, flags in todo:
            if interrupted or time.monotonic() - started > args.max_minutes * 60:
                skipped.append(name)
                continue
            try:
                if "--index" in flags:
                    if redis_url is None:  # one Redis for every part that needs it
                        redis_url = stack.enter_context(private_redis(args.redis_url, out_dir))
                    flags = [*flags, "--redis-url", redis_url]
                results[name] = run_part(name, flags, out_dir, args.lock)
            except KeyboardInterrupt:
                print(f"\ninterrupted during {name}: its child stopped", file=sys.stderr)
                interrupted = True
                skipped.append(name)
    wall = time.monotonic() - started
    checks = matrix_checks(results)
    print_matrix(results, checks, wall, skipped)
    merged = {
        "benchmark": "calibration_matrix",
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": list(sys.argv if argv is None else argv),
        "sim_flags": sorted(known),
        "wall_s": wall,
        "skipped": skipped,
        "parts": results,
        "checks": checks,
    }
    args.out.write_bytes(orjson.dumps(merged, option=orjson.OPT_INDENT_2))
    print(f"results: {args.out}")
    if interrupted:
        return 130
    return 0 if all(r.get("exit_status") == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
