"""A throwaway 3-master Redis Cluster for tests: own redis-server processes on free ports."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from types import TracebackType

import redis

from tests.support.redis_server import RedisServer

CREATE_TIMEOUT_S = 30.0
STATE_TIMEOUT_S = 30.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 (all held at once while they are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


class RedisClusterServers:
    """Starts ``masters`` cluster-enabled ``redis-server`` processes (each its own temp dir and
    nodes.conf), joins them with ``redis-cli --cluster create``, and only ever signals them.

    ``node_timeout_ms`` is the cluster's failure detection time: after it, a stopped master is
    marked failed and (with no replicas) the whole cluster answers CLUSTERDOWN until it is back.
    """

    def __init__(self, masters: int = 3, *, node_timeout_ms: int = 1000) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError(
                "'redis-cli' is not on PATH: install Redis (the package with redis-server and "
                "redis-cli) to run the Redis Cluster tests"
            )
        self._cli = cli
        args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
        )  # fmt: skip
        ports = free_ports(2 * masters)  # bus ports named: port + 10000 may not fit
        self.nodes = [
            RedisServer(port=port, extra_args=(*args, "--cluster-port", str(bus)))
            for port, bus in zip(ports[::2], ports[1::2], strict=True)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def client(self) -> redis.RedisCluster:
        """A synchronous cluster client (for inspecting keys); close it after use."""
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=5)

    def start(self) -> RedisClusterServers:
        """Start every node, create the cluster, wait until every node says cluster_state:ok."""
        try:
            for node in self.nodes:
                node.start()
            cmd = [
                self._cli, "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ]  # fmt: skip
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=CREATE_TIMEOUT_S, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}"
                )
            self.wait_ok()
        except BaseException:
            self.close()
            raise
        return self

    def state(self, node: RedisServer) -> str:
        """The node's ``cluster_state`` (``ok``, ``fail``), or ``down`` if it does not answer."""
        client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1)
        try:
            info = client.execute_command("CLUSTER INFO")
        except redis.RedisError:
            return "down"
        finally:
            client.close()
        if isinstance(info, dict):  # redis-py parses CLUSTER INFO into a mapping
            return str(info.get("cluster_state", "unknown"))
        text = info.decode() if isinstance(info, bytes) else str(info)
        for line in text.splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return "unknown"

    def wait_state(self, want: str, timeout_s: float = STATE_TIMEOUT_S) -> None:
        """Poll (bounded) until every running node reports ``cluster_state:<want>``."""
        deadline = time.monotonic() + timeout_s
        states: list[str] = []
        while time.monotonic() < deadline:
            states = [self.state(n) for n in self.nodes if n.running]
            if states and all(s == want for s in states):
                return
            time.sleep(0.05)
        raise RuntimeError(f"cluster did not reach cluster_state:{want}: {states}")

    def wait_ok(self, timeout_s: float = STATE_TIMEOUT_S) -> None:
        """Poll (bounded) until every node runs and reports ``cluster_state:ok``."""
        for node in self.nodes:
            if not node.running:
                raise RuntimeError(
                    f"cluster node on port {node.port} is not running:\n{node.log()}"
                )
        self.wait_state("ok", timeout_s)

    def flush(self) -> None:
        """Empty every master (between tests sharing the cluster)."""
        for node in self.nodes:
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)
            try:
                client.flushall()
            finally:
                client.close()

    def close(self) -> None:
        """Stop every node (their own PIDs only) and remove their directories."""
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
