"""Serving ASGI apps with real uvicorn servers on pre-bound loopback sockets, in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import uvicorn


def bound_socket() -> socket.socket:
    """A listening TCP socket on a free 127.0.0.1 port; clients may connect at once."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets whose proto says TCP, and without it keep-alive requests stall on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    return sock


def port_of(sock: socket.socket) -> int:
    """The port a socket is bound to."""
    port: int = sock.getsockname()[1]
    return port


class ServerThread:
    """Runs uvicorn servers for several ASGI apps on one event loop in a background thread."""

    def __init__(self, apps: Sequence[Any], *, lifespan: str = "off") -> None:
        self.sockets = [bound_socket() for _ in apps]
        self.ports = [port_of(s) for s in self.sockets]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self._servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app,
                    loop="asyncio",
                    http="httptools",
                    lifespan=lifespan,
                    log_level="warning",
                    access_log=False,
                    timeout_graceful_shutdown=2,
                )
            )
            for app in apps
        ]
        for server in self._servers:
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._done: Future[None] = Future()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(
                asyncio.gather(
                    *(
                        s.serve(sockets=[sock])
                        for s, sock in zip(self._servers, self.sockets, strict=True)
                    )
                )
            )
            self._done.set_result(None)
        except BaseException as exc:  # surfaced to the test in stop()
            self._done.set_exception(exc)
        finally:
            self.loop.close()

    def start(self) -> ServerThread:
        """Start serving; returns at once (the sockets already accept connections)."""
        self._thread.start()
        return self

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the servers' loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every server to exit and wait for the thread."""
        for server in self._servers:
            server.should_exit = True
        self._thread.join(timeout)
        for sock in self.sockets:
            sock.close()
        self._done.result(0)
