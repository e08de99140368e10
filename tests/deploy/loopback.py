"""Simulated backends on several loopback addresses sharing one port, as pods behind one Service."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.sim.config import SimBackendConfig
from gateway.sim.server import SimBackend
from tests.support.serving import ServerThread

MODEL = "sim-llama-8b"


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def shared_port_sockets(hosts: Sequence[str], attempts: int = 20) -> list[socket.socket]:
    """Listening sockets on every host at one port (a port free on the first one, retried)."""
    for _ in range(attempts):
        first = _listen(hosts[0], 0)
        port: int = first.getsockname()[1]
        sockets = [first]
        try:
            sockets.extend(_listen(host, port) for host in hosts[1:])
        except OSError:
            for sock in sockets:
                sock.close()
            continue
        return sockets
    raise RuntimeError(f"no port free on all of {list(hosts)}")


class _PinnedServers(ServerThread):
    """`ServerThread` serving on sockets the caller bound."""

    def __init__(self, apps: Sequence[SimBackend], sockets: list[socket.socket]) -> None:
        super().__init__(apps)
        for sock in self.sockets:
            sock.close()
        self.sockets = sockets
        self.ports = [int(s.getsockname()[1]) for s in sockets]
        self.urls = [f"http://{s.getsockname()[0]}:{s.getsockname()[1]}" for s in sockets]


@dataclass
class PodFleet:
    """Simulated backends, one per loopback address, all on `port`."""

    hosts: tuple[str, ...]
    port: int
    server: ServerThread

    def stop(self) -> None:
        """Stop every backend."""
        self.server.stop()


def start_pod_fleet(hosts: Sequence[str]) -> PodFleet:
    """Zero-latency simulated vLLM backends on `hosts` (for example 127.0.0.2, 127.0.0.3)."""
    sockets = shared_port_sockets(hosts)
    backends = [
        SimBackend(SimBackendConfig(backend_id=f"pod-{i}", seed=i, time_scale=0.0))
        for i in range(len(hosts))
    ]
    server = _PinnedServers(backends, sockets).start()
    return PodFleet(tuple(hosts), server.ports[0], server)
