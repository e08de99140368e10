"""One benchmark run's environment: a fresh simulated fleet and a gateway in front of it."""

from __future__ import annotations

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
    """The simulated fleet of one workload; every policy runs against the same settings."""

    backends: int
    block_size: int
    cache_blocks: int
    prefill_tps: float
    decode_ms: float
    time_scale: float
    max_model_len: int = 32768

    def sim_args(self, base_port: int) -> list[str]:
        """Flags of `prefix-gateway sim` for this fleet."""
        return [
            "--backends", str(self.backends), "--base-port", str(base_port),
            "--host", LOOPBACK, "--flavor", "vllm", "--model", MODEL,
            "--prefill-tps", str(self.prefill_tps), "--decode-ms", str(self.decode_ms),
            "--time-scale", str(self.time_scale), "--cache-blocks", str(self.cache_blocks),
            "--block-size", str(self.block_size), "--max-model-len", str(self.max_model_len),
        ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """How the gateway under test is configured apart from the fleet."""

    policy: str
    index: str = "memory"
    redis_url: str | None = None
    key_prefix: str = "pgw"


def gateway_config(fleet: FleetSettings, options: GatewayOptions, port: int, base: int) -> bytes:
    """The gateway's config (JSON, which is YAML) for a fleet listening on base..base+n-1.

    The gateway is told each backend's true wall-clock prefill speed (simulated speed divided
    by the time scale) and its KV capacity in tokens.
    """
    index: dict[str, Any] = {"kind": options.index}
    if options.index == "redis":
        index.update(redis_url=options.redis_url, key_prefix=options.key_prefix)
    wall_tps = fleet.prefill_tps / fleet.time_scale if fleet.time_scale > 0 else fleet.prefill_tps
    backends = [
        {
            "id": f"sim-{i}",
            "url": f"http://{LOOPBACK}:{base + i}",
            "engine": "vllm",
            "models": [MODEL],
            "prefill_tokens_per_s": wall_tps,
            "kv_cache_tokens": fleet.cache_blocks * fleet.block_size,
        }
        for i in range(fleet.backends)
    ]
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
        self, fleet: FleetSettings, options: GatewayOptions, workdir: Path, repo: Path
    ) -> None:
        self.fleet = fleet
        self.options = options
        self.workdir = workdir
        self.repo = repo
        self.base_port = 0
        self.gateway_port = 0
        self._children: list[ChildProcess] = []

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway."""
        return f"http://{LOOPBACK}:{self.gateway_port}"

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
        self.gateway_port = free_port_range(1, avoid=range(self.base_port, self.base_port + n))
        python = sys.executable
        sim = ChildProcess(
            "simulated fleet",
            [python, "-m", "gateway", "sim", *self.fleet.sim_args(self.base_port)],
            self.workdir / "sim.log",
            self.repo,
        )
        self._children.append(sim)
        with httpx.Client(timeout=2.0) as client:
            wait_until(lambda: _all_up(client, self.backend_urls), sim, timeout_s=30)
            config = self.workdir / "gateway.yaml"
            config.write_bytes(
                gateway_config(self.fleet, self.options, self.gateway_port, self.base_port)
            )
            gateway = ChildProcess(
                "gateway",
                [python, "-m", "gateway", "serve", "--config", str(config)],
                self.workdir / "gateway.log",
                self.repo,
            )
            self._children.append(gateway)
            wait_until(lambda: _gateway_ready(client, self.gateway_url, n), gateway, 30)

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


__all__ = ["FleetSettings", "GatewayOptions", "RunEnvironment", "StartupError", "gateway_config"]
