"""Serve many simulated backends in one asyncio process, one uvicorn server each."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import threading
from collections.abc import Callable, Coroutine, Generator, Sequence
from types import TracebackType
from typing import Any

import uvicorn

from gateway.sim.config import FlavorName, SimBackendConfig, SimFaults
from gateway.sim.server import SimBackend

_ABORT_NOISE = "ASGI callable returned without completing response."


def build_backends(
    n: int,
    flavor: FlavorName | Sequence[FlavorName] = "vllm",
    base: SimBackendConfig | None = None,
    faults: SimFaults | None = None,
) -> list[SimBackend]:
    """n backends `sim-0..sim-{n-1}` from one base config; a flavor list is used cyclically.

    Each backend gets its own SimFaults copy and seed `base.seed + i`.
    """
    base = base if base is not None else SimBackendConfig()
    flavors: Sequence[FlavorName] = (flavor,) if isinstance(flavor, str) else flavor
    if not flavors:
        raise ValueError("at least one flavor is required")
    template = faults if faults is not None else SimFaults()
    out = []
    for i in range(n):
        config = dataclasses.replace(
            base, backend_id=f"sim-{i}", flavor=flavors[i % len(flavors)], seed=base.seed + i
        )
        out.append(SimBackend(config, dataclasses.replace(template)))
    return out


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket (port 0 = any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP, and keep-alive requests would otherwise wait on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def socket_url(sock: socket.socket) -> str:
    """http:// URL of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop factory when installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on POSIX
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _DropAbortNoise(logging.Filter):
    """Hide uvicorn's error line for connections the simulator closes on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _ABORT_NOISE


class SimFleet:
    """Runs SimBackends in the current event loop: `await serve(...)` until shutdown()."""

    def __init__(self, backends: Sequence[SimBackend], *, graceful_timeout_s: int = 2) -> None:
        self.backends = list(backends)
        self.urls: list[str] = []
        self._graceful_timeout_s = graceful_timeout_s
        self._servers: list[_Server] = []
        self._stopped = asyncio.Event()

    def _config(self, backend: SimBackend) -> uvicorn.Config:
        return uvicorn.Config(
            backend,
            loop="uvloop",
            http="httptools",
            ws="none",
            interface="asgi3",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=self._graceful_timeout_s,
        )

    async def serve(
        self,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        """Serve every backend until shutdown(); backend i uses ports[i] or sockets[i]."""
        if sockets is None:
            wanted = list(ports) if ports is not None else [0] * len(self.backends)
            sockets = [bind_socket(host, port) for port in wanted]
        if len(sockets) != len(self.backends):
            raise ValueError("need exactly one port or socket per backend")
        self.urls = [socket_url(sock) for sock in sockets]
        self._servers = [_Server(self._config(b)) for b in self.backends]
        noise = _DropAbortNoise()
        error_logger = logging.getLogger("uvicorn.error")
        error_logger.addFilter(noise)
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, sockets, strict=True)
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    self.request_shutdown()
            await asyncio.gather(*tasks)
        finally:
            self.request_shutdown()
            await asyncio.gather(*tasks, return_exceptions=True)
            error_logger.removeFilter(noise)
            self._stopped.set()

    def request_shutdown(self) -> None:
        """Ask every server to stop (returns at once; serve() finishes shortly after)."""
        for server in self._servers:
            server.should_exit = True

    async def shutdown(self) -> None:
        """Stop every server gracefully and wait until serve() has returned."""
        self.request_shutdown()
        if self._servers:
            await self._stopped.wait()


class SimFleetThread:
    """A SimFleet in a background thread with its own (uv)loop, for tests and benchmarks.

    Sockets are bound and listening when start() returns, so clients may connect at once.
    """

    def __init__(
        self,
        backends: Sequence[SimBackend],
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
    ) -> None:
        self.backends = list(backends)
        self.host = host
        self.ports = list(ports) if ports is not None else [0] * len(self.backends)
        self.urls: list[str] = []
        self._fleet: SimFleet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> list[str]:
        """Bind, start the thread, and return the backends' URLs."""
        sockets = [bind_socket(self.host, port) for port in self.ports]
        self.urls = [socket_url(sock) for sock in sockets]
        self._thread = threading.Thread(
            target=self._run, args=(sockets,), name="sim-fleet", daemon=True
        )
        self._thread.start()
        if not self._running.wait(timeout):
            raise RuntimeError("simulated fleet did not start")
        if self._error is not None:
            raise RuntimeError("simulated fleet failed to start") from self._error
        return self.urls

    def _run(self, sockets: list[socket.socket]) -> None:
        try:
            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                runner.run(self._main(sockets))
        except BaseException as exc:
            self._error = exc
            self._running.set()

    async def _main(self, sockets: list[socket.socket]) -> None:
        self._loop = asyncio.get_running_loop()
        self._fleet = SimFleet(self.backends, graceful_timeout_s=1)
        serving = asyncio.create_task(self._fleet.serve(sockets=sockets))
        self._running.set()
        await serving

    def run_coroutine(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run a coroutine on the fleet's loop from another thread and return its result."""
        if self._loop is None:
            raise RuntimeError("fleet not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the fleet down and join the thread."""
        if self._loop is not None and self._fleet is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._fleet.request_shutdown)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SimFleetThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
