"""One benchmark run's environment: a fresh simulated fleet and a gateway in front of it."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import orjson

from bench.procs import LOOPBACK, ChildProcess, StartupError, free_port_range, wait_until

MODEL = "sim-llama-8b"


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """The simulated fleet of one workload; every policy runs against the same settings.

    `prefill_tps` is the mean simulated prefill speed; `speeds` (relative, cycled over the
    backends) spread it so the fleet's total capacity stays `backends x prefill_tps`. Fields
    left None are not passed to the simulator (its own defaults apply).
    """

    backends: int
    block_size: int
    cache_blocks: int
    prefill_tps: float
    decode_ms: float
    time_scale: float
    max_model_len: int = 32768
    bytes_per_token: float | None = None
    scheduler: str | None = None
    max_batched_tokens: int | None = None
    decode_batch_slowdown: float | None = None
    speeds: tuple[float, ...] = ()

    def backend_tps(self) -> list[float]:
        """Simulated prefill tokens/s of every backend."""
        if not self.speeds:
            return [self.prefill_tps] * self.backends
        rel = [self.speeds[i % len(self.speeds)] for i in range(self.backends)]
        mean = sum(rel) / len(rel)
        return [float(f"{self.prefill_tps * r / mean:.6g}") for r in rel]

    def sim_args(self, base_port: int, known: frozenset[str] = frozenset()) -> list[str]:
        """Flags of `prefix-gateway sim` for this fleet (`known`: the flags it accepts)."""
        prefill_flag = "--prefill-tokens-per-s" if "--prefill-tokens-per-s" in known else (
            "--prefill-tps")  # fmt: skip
        args = [
            "--backends", str(self.backends), "--base-port", str(base_port),
            "--host", LOOPBACK, "--flavor", "vllm", "--model", MODEL,
            prefill_flag, ",".join(f"{t:g}" for t in self.backend_tps()),
            "--decode-ms", str(self.decode_ms),
            "--time-scale", str(self.time_scale), "--cache-blocks", str(self.cache_blocks),
            "--block-size", str(self.block_size), "--max-model-len", str(self.max_model_len),
        ]  # fmt: skip
        optional = (
            ("--bytes-per-token", self.bytes_per_token),
            ("--scheduler", self.scheduler),
            ("--max-batched-tokens", self.max_batched_tokens),
            ("--decode-batch-slowdown", self.decode_batch_slowdown),
        )
        for flag, value in optional:
            if value is None:
                continue
            if known and flag not in known:
                raise StartupError(f"this simulator has no {flag} (see prefix-gateway sim --help)")
            args += [flag, str(value)]
        return args

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        d = asdict(self)
        d["backend_prefill_tps"] = self.backend_tps()
        return d


def sim_flags(repo: Path) -> frozenset[str]:
    """The flags `prefix-gateway sim --help` lists (the simulator changes under us)."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "sim", "--help"],
        cwd=repo, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return frozenset(re.findall(r"--[a-z][a-z0-9-]*", proc.stdout))


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """How the gateway under test is configured apart from the fleet.

    `kv_told`: give each backend's true KV capacity as `kv_cache_tokens` (else the gateway's
    default). `tell_speeds`: "true" gives each backend its own wall-clock prefill speed,
    "equal" gives every backend the fleet's mean. `gateways` processes share the Redis index;
    `workers` > 1 starts one gateway with `serve --workers N`.
    """

    policy: str
    index: str = "memory"
    redis_url: str | None = None
    key_prefix: str = "pgw"
    kv_told: bool = True
    tell_speeds: str = "true"
    gateways: int = 1
    workers: int = 1


def gateway_config(fleet: FleetSettings, options: GatewayOptions, port: int, base: int) -> bytes:
    """The gateway's config (JSON, which is YAML) for a fleet listening on base..base+n-1.

    Prefill speeds are wall-clock (simulated speed divided by the time scale), true per backend
    or all equal to the mean (`tell_speeds`); KV capacity in tokens only when `kv_told`.
    """
    index: dict[str, Any] = {"kind": options.index}
    if options.index == "redis":
        index.update(redis_url=options.redis_url, key_prefix=options.key_prefix)
    div = fleet.time_scale if fleet.time_scale > 0 else 1.0
    speeds = fleet.backend_tps()
    if options.tell_speeds == "equal":
        speeds = [sum(speeds) / len(speeds)] * len(speeds)
    backends: list[dict[str, Any]] = []
    for i in range(fleet.backends):
        backend: dict[str, Any] = {
            "id": f"sim-{i}",
            "url": f"http://{LOOPBACK}:{base + i}",
            "engine": "vllm",
            "models": [MODEL],
            "prefill_tokens_per_s": speeds[i] / div,
        }
        if options.kv_told:
            backend["kv_cache_tokens"] = fleet.cache_blocks * fleet.block_size
        backends.append(backend)
    config = {
        "server": {"host": LOOPBACK, "port": port, "log_level": "warning"},
        "index": index,
        "routing": {"policy": options.policy},
        "backends": backends,
    }
    return orjson.dumps(config, option=orjson.OPT_INDENT_2)


class RunEnvironment:
    """Context manager: start the fleet, then the gateway; stop both by pid on exit."""

    def __init__(
        self,
        fleet: FleetSettings,
        options: GatewayOptions,
        workdir: Path,
        repo: Path,
        known_flags: frozenset[str] = frozenset(),
    ) -> None:
        self.fleet = fleet
        self.options = options
        self.workdir = workdir
        self.repo = repo
        self.known_flags = known_flags
        self.base_port = 0
        self.gateway_ports: list[int] = []
        self._children: list[ChildProcess] = []

    @property
    def gateway_urls(self) -> list[str]:
        """Base URL of every gateway process."""
        return [f"http://{LOOPBACK}:{port}" for port in self.gateway_ports]

    @property
    def backend_urls(self) -> list[str]:
        """Base URL of every simulated backend."""
        return [f"http://{LOOPBACK}:{self.base_port + i}" for i in range(self.fleet.backends)]

    def __enter__(self) -> RunEnvironment:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the gateway, then the fleet."""
        while self._children:
            self._children.pop().stop()

    def _start(self) -> None:
        n = self.fleet.backends
        self.base_port = free_port_range(n)
        taken = list(range(self.base_port, self.base_port + n))
        python = sys.executable
        sim_args = self.fleet.sim_args(self.base_port, self.known_flags)
        sim = ChildProcess(
            "simulated fleet",
            [python, "-m", "gateway", "sim", *sim_args],
            self.workdir / "sim.log",
            self.repo,
        )
        self._children.append(sim)
        with httpx.Client(timeout=2.0) as client:
            wait_until(lambda: _all_up(client, self.backend_urls), sim, timeout_s=30)
            for g in range(max(1, self.options.gateways)):
                port = free_port_range(1, avoid=taken)
                taken.append(port)
                self.gateway_ports.append(port)
                config = self.workdir / f"gateway-{g}.yaml"
                config.write_bytes(gateway_config(self.fleet, self.options, port, self.base_port))
                argv = [python, "-m", "gateway", "serve", "--config", str(config)]
                if self.options.workers > 1:
                    argv += ["--workers", str(self.options.workers)]
                gateway = ChildProcess(
                    f"gateway {g}", argv, self.workdir / f"gateway-{g}.log", self.repo
                )
                self._children.append(gateway)
                url = f"http://{LOOPBACK}:{port}"
                wait_until(lambda url=url: _gateway_ready(client, url, n), gateway, 30)  # type: ignore[misc]

    def stats(self) -> list[dict[str, Any]]:
        """Every backend's /sim/stats, in backend order."""
        out: list[dict[str, Any]] = []
        with httpx.Client(timeout=10.0) as client:
            for url in self.backend_urls:
                response = client.get(url + "/sim/stats")
                response.raise_for_status()
                out.append(response.json())
        return out


def _all_up(client: httpx.Client, urls: list[str]) -> bool:
    return all(client.get(url + "/sim/stats").status_code == 200 for url in urls)


def _gateway_ready(client: httpx.Client, url: str, backends: int) -> bool:
    response = client.get(url + "/readyz")
    if response.status_code != 200:
        return False
    body = response.json()
    return bool(body.get("healthy_backends", backends) >= backends)


__all__ = [
    "FleetSettings",
    "GatewayOptions",
    "RunEnvironment",
    "StartupError",
    "gateway_config",
    "sim_flags",
]
