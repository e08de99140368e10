"""Real vLLM servers (tests and benchmarks): free loopback ports, /health polled, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import LOOPBACK, ChildProcess, StartupError

PYTHON_ENV = "PGW_ENGINES_PYTHON"
MODEL_ENV = "PGW_ENGINES_MODEL"
SERVED_MODEL = "tiny-llama"
LOG_TAIL_LINES = 60


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How every vLLM server of a fleet is started (the CPU build needs blocks of 32 tokens)."""

    python: Path
    model_dir: Path
    served_model: str = SERVED_MODEL
    max_model_len: int = 2048
    block_size: int = 32
    kv_cache_gib: int = 1
    startup_timeout_s: float = 900.0
    stop_grace_s: float = 30.0
    dev_mode: bool = False  # VLLM_SERVER_DEV_MODE: adds POST /reset_prefix_cache (benchmarks)

    @classmethod
    def from_env(cls) -> EngineOptions:
        """Options from `PGW_ENGINES_PYTHON` and `PGW_ENGINES_MODEL` (set by test-engines.sh)."""
        python, model = os.environ.get(PYTHON_ENV), os.environ.get(MODEL_ENV)
        if not python or not model:
            raise StartupError(f"set {PYTHON_ENV} and {MODEL_ENV} (the engines python, the model)")
        return cls(Path(python), Path(model))

    def argv(self, port: int) -> list[str]:
        """The command line of one server (`env` execs, so the pid stays the server's)."""
        return [
            "env",
            f"VLLM_CPU_KVCACHE_SPACE={self.kv_cache_gib}",
            "VLLM_CPU_OMP_THREADS_BIND=nobind",
            "OMP_NUM_THREADS=1",
            f"VLLM_SERVER_DEV_MODE={int(self.dev_mode)}",
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", self.served_model,
            "--host", LOOPBACK, "--port", str(port),
            "--max-model-len", str(self.max_model_len), "--block-size", str(self.block_size),
            "--dtype", "float32", "--enable-prefix-caching", "--enable-prompt-tokens-details",
            "--scheduling-policy", "priority",  # takes the tiers' engine_priority
            "--disable-uvicorn-access-log",
        ]  # fmt: skip


def free_port() -> int:
    """A port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class VllmServer:
    """One vLLM OpenAI-compatible server we started."""

    def __init__(self, name: str, options: EngineOptions, log_dir: Path) -> None:
        self.name = name
        self.options = options
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self.child = ChildProcess(name, options.argv(self.port), self.log_path, Path.cwd())

    def healthy(self, client: httpx.Client) -> bool:
        """True when `/health` answers 200."""
        try:
            return client.get(self.url + "/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log."""
        return self.child.tail(lines)

    def stop(self) -> None:
        """SIGTERM its pid (then SIGKILL); then end any of its own children left behind."""
        pid = self.child.pid
        self.child.stop(self.options.stop_grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # its session: started with start_new_session


class VllmFleet:
    """Context manager: `n` vLLM servers started together, all healthy before it returns."""

    def __init__(self, n: int, options: EngineOptions, log_dir: Path) -> None:
        self.options = options
        self.log_dir = log_dir
        self.n = n
        self.servers: list[VllmServer] = []

    def __enter__(self) -> VllmFleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def urls(self) -> list[str]:
        """Base URLs, in order."""
        return [s.url for s in self.servers]

    def start(self) -> None:
        """Start every server, then poll `/health` of each until a deadline."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.servers = [VllmServer(f"vllm-{i}", self.options, self.log_dir) for i in range(self.n)]
        deadline = time.monotonic() + self.options.startup_timeout_s
        pending = list(self.servers)
        with httpx.Client() as client:
            while pending and time.monotonic() < deadline:
                for server in list(pending):
                    if not server.child.alive():
                        raise StartupError(self._failure(f"{server.name} exited during start-up"))
                    if server.healthy(client):
                        pending.remove(server)
                if pending:
                    time.sleep(1.0)
        if pending:
            names = ", ".join(s.name for s in pending)
            raise StartupError(self._failure(f"{names} not healthy after the start-up deadline"))

    def _failure(self, what: str) -> str:
        logs = "\n".join(f"--- {s.name} ({s.log_path}) ---\n{s.tail()}" for s in self.servers)
        return f"vLLM did not start: {what}\n{logs}"

    def logs(self) -> str:
        """The tail of every server's log."""
        return "\n".join(f"--- {s.name} ---\n{s.tail()}" for s in self.servers)

    def stop(self) -> None:
        """Stop every server we started."""
        for server in self.servers:
            server.stop()


def scrape(client: httpx.Client, url: str) -> str:
    """The Prometheus text of `url/metrics`."""
    response = client.get(url + "/metrics", timeout=10.0)
    response.raise_for_status()
    return response.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called exactly `name` in a Prometheus text."""
    out: list[tuple[dict[str, str], float]] = []
    for family in text_string_to_metric_families(text):
        out.extend((dict(s.labels), s.value) for s in family.samples if s.name == name)
    return out


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        value
        for got, value in samples(text, name)
        if all(got.get(k) == v for k, v in labels.items())
    )
