"""Child processes the benchmark owns (simulated fleet, gateway): start, wait ready, stop by pid."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"


class ChildProcess:
    """One subprocess with its output in a log file; stop() signals exactly its pid."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop the child ourselves
            )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    def alive(self) -> bool:
        """True while the child runs."""
        return self._proc.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the pid, wait up to `grace_s`, then SIGKILL it."""
        if self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait(timeout=grace_s)

    def kill(self) -> None:
        """SIGKILL the pid at once (a crash, not a shutdown) and reap it."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        self._proc.wait(timeout=10)

    def tail(self, lines: int = 15) -> str:
        """The last lines of the child's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class StartupError(RuntimeError):
    """A child did not become ready in time."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port_range(n: int, avoid: Sequence[int] = (), attempts: int = 200) -> int:
    """A base port P such that P..P+n-1 are free on loopback right now."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20000, 60000 - n)
        ports = range(base, base + n)
        if any(p in avoid for p in ports):
            continue
        if all(_port_free(p) for p in ports):
            return base
    raise StartupError(f"no {n} consecutive free loopback ports after {attempts} tries")


def wait_until(
    ready: Callable[[], bool], child: ChildProcess, timeout_s: float, poll_s: float = 0.1
) -> None:
    """Poll `ready` until it holds; raise StartupError if the child dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartupError(f"{child.name} exited during startup:\n{child.tail()}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise StartupError(f"{child.name} not ready after {timeout_s:.0f} s:\n{child.tail()}")
