"""The processes the overhead benchmark owns: simulated backend, Redis, gateways, their CPU time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
import yaml

from bench.procs import LOOPBACK, ChildProcess, StartupError, free_port_range, wait_until

REDIS_HINT = (
    "redis-server is not on PATH (needed for the Redis-index runs). Install it (Debian/Ubuntu "
    "package `redis-server`) or pass --skip-redis."
)


def redis_load(url: str) -> tuple[int, int] | None:
    """Commands Redis has run so far (also those inside Lua scripts), and script invocations."""
    try:
        with redis.Redis.from_url(url, socket_timeout=2.0) as client:
            stats = client.info("commandstats")
    except redis.RedisError:
        return None
    calls = scripts = 0
    for name, value in stats.items():
        if isinstance(value, dict):
            n = int(value.get("calls", 0))
            calls += n
            if name.removeprefix("cmdstat_").startswith(("eval", "fcall")):
                scripts += n
    return calls, scripts


def gateway_command() -> list[str]:
    """How to run the prefix-gateway CLI with this interpreter."""
    return [sys.executable, "-m", "gateway"]


def serve_accepts_workers(repo: Path) -> bool:
    """True when `prefix-gateway serve` knows --workers."""
    done = subprocess.run(
        [*gateway_command(), "serve", "--help"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--workers" in done.stdout


def gateway_config(
    port: int, backend_url: str, model: str, redis_url: str | None
) -> dict[str, Any]:
    """The gateway's YAML config as a mapping: one backend, memory or Redis index."""
    index: dict[str, Any] = {"kind": "memory"}
    if redis_url is not None:
        index = {"kind": "redis", "redis_url": redis_url}
    return {
        "server": {"host": LOOPBACK, "port": port, "log_level": "warning"},
        "index": index,
        "routing": {"policy": "profile"},
        "backends": [{"id": "sim-0", "url": backend_url, "engine": "vllm", "models": [model]}],
    }


@dataclass(frozen=True)
class Target:
    """Something wrk can be pointed at, and the processes whose CPU time it costs."""

    name: str
    url: str
    gateway_pid: int | None
    backend_pid: int
    redis_pid: int | None = None
    redis_url: str | None = None


class Stack:
    """Starts and owns every child process; close() stops each by pid, in reverse order."""

    def __init__(self, repo: Path, log_dir: Path, model: str) -> None:
        self.repo = repo
        self.log_dir = log_dir
        self.model = model
        self._stack = ExitStack()
        self._used: list[int] = []

    def __enter__(self) -> Stack:
        """Enter the context: close() runs on exit, also on errors and Ctrl-C."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop every child."""
        self.close()

    def close(self) -> None:
        """Stop every child this stack started (SIGTERM, then SIGKILL after a grace period)."""
        self._stack.close()

    def _port(self) -> int:
        port = free_port_range(1, avoid=self._used)
        self._used.append(port)
        return port

    def _child(self, name: str, argv: list[str]) -> ChildProcess:
        child = ChildProcess(name, argv, self.log_dir / f"{name}.log", self.repo)
        self._stack.callback(child.stop)
        return child

    def start_backend(
        self, timeout_s: float = 30.0, timing: Sequence[str] = ("--zero-latency",)
    ) -> tuple[str, int]:
        """One simulated backend (zero-latency unless `timing` says otherwise); returns its
        URL and pid."""
        port = self._port()
        argv = [*gateway_command(), "sim", "--backends", "1", "--base-port", str(port)]
        argv += [*timing, "--model", self.model, "--host", LOOPBACK]
        child = self._child("backend", argv)
        url = f"http://{LOOPBACK}:{port}"

        def ready() -> bool:
            return httpx.get(f"{url}/health", timeout=1.0).status_code == 200

        wait_until(ready, child, timeout_s)
        return url, child.pid

    def start_redis(self, timeout_s: float = 20.0) -> tuple[str, int]:
        """A throwaway redis-server (no persistence) on a free port; returns its URL and pid."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise StartupError(REDIS_HINT)
        port = self._port()
        argv = [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly"]
        child = self._child("redis", [*argv, "no"])
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=1.0)
        self._stack.callback(client.close)

        def ready() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(ready, child, timeout_s)
        return f"redis://{LOOPBACK}:{port}/0", child.pid

    def start_gateway(
        self,
        name: str,
        backend_url: str,
        redis_url: str | None,
        workers: int,
        timeout_s: float = 60.0,
    ) -> tuple[str, int]:
        """A gateway in front of the backend; returns its URL and (master) pid once ready."""
        port = self._port()
        config = self.log_dir / f"{name}.yaml"
        data = gateway_config(port, backend_url, self.model, redis_url)
        config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        argv = [*gateway_command(), "serve", "--config", str(config)]
        if workers != 1:
            argv += ["--workers", str(workers)]
        child = self._child(name, argv)
        url = f"http://{LOOPBACK}:{port}"

        def ready() -> bool:
            response = httpx.get(f"{url}/readyz", timeout=1.0)
            if response.status_code != 200:
                return False
            body = orjson.loads(response.content)
            return bool(body.get("ready")) and body.get("healthy_backends") == 1

        wait_until(ready, child, timeout_s, poll_s=0.2)
        return url, child.pid
