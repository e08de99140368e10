"""A gateway as its own OS process (`python -m gateway serve`), for signals and raw sockets."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

READY_LINE = "Uvicorn running on"


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GatewayProcess:
    """Runs `prefix-gateway serve` on a config file it writes; reads its log lines."""

    def __init__(self, config_dir: Path, backends: Sequence[Mapping[str, Any]], **sections: Any):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = config_dir / "gateway.yaml"
        sections.setdefault("health", {"interval_s": 0.2, "load_interval_s": 0.2})
        self.write_config(backends, **sections)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def write_config(self, backends: Sequence[Mapping[str, Any]], **sections: Any) -> None:
        """Write the config file the process reads (at start and on reload)."""
        server = {"host": "127.0.0.1", "port": self.port, **sections.pop("server", {})}
        data = {"server": server, "backends": list(backends), **sections}
        self.config_path.write_text(yaml.safe_dump(data), encoding="utf-8")

    def start(self, timeout_s: float = 20.0, args: Sequence[str] = ()) -> GatewayProcess:
        """Start it (`args`: more `serve` options) and wait for uvicorn's ready line (bounded)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)]
        self.proc = subprocess.Popen(
            [*command, *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for_line(READY_LINE, timeout_s)
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for_line(self, needle: str, timeout_s: float = 20.0) -> str:
        """The next log line containing `needle` (earlier lines are kept in `log`)."""
        deadline = time.monotonic() + timeout_s
        for line in self.log:
            if needle in line:
                return line
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.log.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no log line with {needle!r}; log:\n{''.join(self.log)}")

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the process (by its pid)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 60.0) -> int:
        """Wait for the process to exit; its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        """Stop it if still running: SIGINT, a second one once it drains (no waits), SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.wait_for_line("draining:", 10)
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(15)
        except (AssertionError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)
