"""Redis Cluster URLs (``redis+cluster://``) and the async cluster client the index runs on.

``redis+cluster://[user:password@]host:port[,host:port...][/0]`` (``rediss+cluster://`` for TLS)
names a Redis Cluster by one or more seed nodes; the client discovers the rest from any seed
that answers. A cluster has no databases (only ``/0``) and no unix sockets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import unquote

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """The seed nodes and credentials a ``redis+cluster://`` URL names."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def _node(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"cluster node {text!r} must be host:port")
    return host, int(port)


def parse_cluster_url(url: str) -> ClusterTarget:
    """Parse a ``redis+cluster://`` URL; ValueError says what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError("a cluster URL starts with redis+cluster:// or rediss+cluster://")
    if "?" in rest or "#" in rest:
        raise ValueError("a cluster URL takes no query or fragment")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0 (drop the /<db> or use /0)")
    userinfo, at, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise ValueError("a cluster URL names at least one seed node host:port")
    nodes = tuple(_node(part.strip()) for part in hosts.split(","))
    return ClusterTarget(nodes, username, password, scheme.lower() == "rediss+cluster")


class ClusterClient:
    """``RedisCluster`` with calls bounded to ``max_connections`` at once, waiting for a slot.

    redis-py's cluster nodes raise ``MaxConnectionsError`` instead of waiting when their pool is
    full; the semaphore makes it wait (inside the caller's timeout), as the single-node pool does.
    """

    def __init__(self, url: str, *, max_connections: int, socket_timeout_s: float) -> None:
        target = parse_cluster_url(url)
        self._slots = asyncio.Semaphore(max_connections)
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            ssl=target.tls,
            # Headroom over the semaphore: topology refreshes take connections of their own.
            max_connections=2 * max_connections,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 1),  # one retry after a topology refresh, then fail
            protocol=2,
        )

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: object) -> object:
        """EVALSHA on the node that owns the first key's slot."""
        async with self._slots:
            return await self._cluster.evalsha(sha, numkeys, *keys_and_args)  # type: ignore[arg-type]

    async def eval(self, source: str, numkeys: int, *keys_and_args: object) -> object:
        """EVAL on the node that owns the first key's slot."""
        async with self._slots:
            return await self._cluster.eval(source, numkeys, *keys_and_args)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Close every node's connections."""
        await self._cluster.aclose()
