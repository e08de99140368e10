"""A throwaway redis-server subprocess for tests: free port, no persistence, pause/resume."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pings(port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """Starts its own ``redis-server`` on 127.0.0.1 and only ever signals that process."""

    def __init__(
        self,
        *,
        port: int | None = None,
        executable: str = "redis-server",
        startup_timeout_s: float = 10.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise RuntimeError(
                f"{executable!r} is not on PATH: install Redis (for example the redis-server "
                "package) to run the Redis integration tests"
            )
        self._executable = found
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self._startup_timeout = startup_timeout_s
        self._extra_args = extra_args
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the running server, if any."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """The tail of the server's log file."""
        if self._dir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self._dir / "redis.log").read_text(errors="replace")[-2000:]
        return ""

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.running:
            return self
        attempts = 1 if self._fixed_port or self._dir is not None else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
            if self._launch():
                return self
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.log()}")

    def _launch(self) -> bool:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="gateway-redis-"))
        cmd = [
            self._executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "redis.log"),
            "--daemonize", "no",
            *self._extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._paused = False
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if _pings(self.port, 0.2):
                return True
            time.sleep(0.02)
        self._terminate()
        return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._paused = False

    def stop(self) -> None:
        """Terminate the server (its own PID only) and wait for it; the port may be reused."""
        self._terminate()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing answers (a hung Redis)."""
        if self._proc is not None and self.running:
            os.kill(self._proc.pid, signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._proc is not None and self._paused:
            os.kill(self._proc.pid, signal.SIGCONT)
            self._paused = False

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
