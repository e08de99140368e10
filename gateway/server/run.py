"""Serving the gateway: uvicorn with the hardened protocol, a drain on SIGTERM, reload on SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

from gateway.settings import ServerSettings

if TYPE_CHECKING:
    from gateway.app import GatewayApp

log = logging.getLogger("gateway.server")

# After a drain ended the requests it outlived: how long they get to send their last bytes.
FINAL_GRACE_S = 5
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def uvicorn_options(server: ServerSettings) -> dict[str, Any]:
    """uvicorn settings for the gateway (host and port are the caller's)."""
    return {
        "loop": "uvloop",
        "http": "gateway.server.protocol:GatewayHttpProtocol",
        "ws": "none",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "log_level": server.log_level,
        "timeout_keep_alive": server.keepalive_timeout_s,
        "timeout_graceful_shutdown": FINAL_GRACE_S,
    }


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the gateway's lifecycle.

    SIGTERM (or SIGINT): `/readyz` answers 503 at once; connections are still accepted for
    `server.drain_delay_s`, so load balancers see it; then the listener closes and requests in
    flight get up to `server.drain_s` to finish; those still running then end with an in-band
    error and `[DONE]` (streams) or a 503. A second signal skips what is left of the waits.
    SIGHUP reloads the config file (see `Runtime.reload`).
    """

    def __init__(self, config: uvicorn.Config, app: GatewayApp) -> None:
        super().__init__(config)
        self._app = app
        self._draining: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()
        self._reloads: set[asyncio.Task[Any]] = set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGTERM, SIGINT and SIGHUP on the loop while serving (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.begin_drain)
        loop.add_signal_handler(signal.SIGHUP, self.begin_reload)
        try:
            yield
        finally:
            for sig in HANDLED_SIGNALS:
                loop.remove_signal_handler(sig)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup; then what a supervisor's worker held back meanwhile is delivered."""
        await super().startup(sockets)
        # Workers start with the handled signals blocked (gateway/server/supervisor.py); in a
        # single process none are, and this changes nothing.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)

    def begin_drain(self) -> None:
        """Start draining; a second call cuts the waits short."""
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self.drain())
        else:
            log.warning("second stop signal: ending the remaining requests now")
            self._hurry.set()

    def begin_reload(self) -> None:
        """Reload the config file in the background (SIGHUP)."""
        task = asyncio.get_running_loop().create_task(self._app.runtime.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def drain(self) -> None:
        """The SIGTERM sequence (see the class docstring), then uvicorn's own shutdown."""
        lifecycle = self._app.runtime.lifecycle
        server = self._app.deps.settings.server
        lifecycle.draining = True
        log.info("draining: /readyz is 503, still accepting for %g s", server.drain_delay_s)
        await self._pause(server.drain_delay_s)
        for listener in getattr(self, "servers", []):
            listener.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        in_flight = len(lifecycle.in_flight)
        log.info("listener closed; %d requests in flight get %g s", in_flight, server.drain_s)
        if not await self._idle_within(server.drain_s):
            ended = lifecycle.abort_all()
            log.warning("drain window over: ending %d requests still in flight", ended)
            await lifecycle.wait_idle(FINAL_GRACE_S)
        self.should_exit = True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), seconds)

    async def _idle_within(self, seconds: float) -> bool:
        lifecycle = self._app.runtime.lifecycle
        idle = asyncio.ensure_future(lifecycle.wait_idle(seconds))
        hurry = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait((idle, hurry), return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        if not idle.done():
            idle.cancel()
            return False
        return bool(idle.result())


def serve(
    app: GatewayApp, host: str, port: int, sockets: list[socket.socket] | None = None
) -> None:
    """Run the gateway until a stop signal's drain completes."""
    options = uvicorn_options(app.deps.settings.server)
    config = uvicorn.Config(app, host=host, port=port, **options)
    GatewayServer(config, app).run(sockets=sockets)
