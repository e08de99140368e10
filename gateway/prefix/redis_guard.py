"""Runs the Redis index's Lua scripts under hard timeouts and two circuit breakers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.prefix.breaker import CircuitBreaker, IndexBreakers
from gateway.prefix.index import IndexCounters
from gateway.prefix.redis_cluster import ClusterClient, is_cluster_url
from gateway.prefix.redis_scripts import LuaScript
from gateway.prefix.resp import PipelinedRedis


class ScriptClient(Protocol):
    """The two calls the index makes, on one Redis or on a Redis Cluster."""

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        """Run a cached script."""
        ...

    async def eval(self, source: str, numkeys: int, *keys_and_args: Any) -> Any:
        """Run (and cache) a script."""
        ...

    async def aclose(self) -> None:
        """Release the connections."""
        ...


def script_client(url: str, *, max_connections: int, socket_timeout_s: float) -> ScriptClient:
    """A cluster client for ``redis+cluster://`` URLs (`max_connections` per node), else one
    pipelined connection to the single node."""
    if is_cluster_url(url):
        return ClusterClient(
            url, max_connections=max_connections, socket_timeout_s=socket_timeout_s
        )
    return PipelinedRedis(url, socket_timeout_s=socket_timeout_s)


class GuardedScripts:
    """Two clients (lookups never share a connection with writes), hard timeouts, breakers.

    A call cancelled by its timeout leaves nothing a later call could misread: the pipelined
    client matches replies by position, and redis-py's cluster client disconnects a
    connection whose call was cancelled before it goes back to the pool.

    What counts: a call succeeds only when Redis runs the script and returns its reply. Every
    other outcome is a failure of the call's kind (lookup or write) and feeds that breaker:
    timeouts, connection errors, and error replies (``ResponseError``: MOVED or ASK from a
    cluster node behind a single-node URL, READONLY from a replica, OOM, CLUSTERDOWN, a script
    error). The one error reply handled here is NOSCRIPT: the script is sent again with EVAL,
    which also caches it, and only that second call's outcome counts.
    """

    def __init__(
        self,
        url: str,
        *,
        breakers: IndexBreakers,
        counters: IndexCounters,
        max_connections: int,
        socket_timeout_s: float,
    ) -> None:
        self.breakers = breakers
        self.last_failure = ""
        self._counters = counters
        self._lookups = script_client(
            url, max_connections=max_connections, socket_timeout_s=socket_timeout_s
        )
        self._writes = script_client(
            url, max_connections=max_connections, socket_timeout_s=socket_timeout_s
        )

    async def _eval(
        self,
        client: ScriptClient,
        script: LuaScript,
        key: bytes,
        args: Sequence[Any],
        limit_s: float,
    ) -> Any:
        async with asyncio.timeout(limit_s):
            try:
                return await client.evalsha(script.sha, 1, key, *args)
            except NoScriptError:  # first use, or Redis restarted: EVAL also caches it
                return await client.eval(script.source, 1, key, *args)

    async def run(
        self,
        script: LuaScript,
        key: bytes,
        args: Sequence[Any],
        *,
        limit_s: float,
        lookup: bool = False,
    ) -> tuple[bool, Any]:
        """Run a script and feed the breaker: (True, reply) or (False, None). Never raises."""
        client = self._lookups if lookup else self._writes
        breaker: CircuitBreaker = self.breakers.reads if lookup else self.breakers.writes
        try:
            reply = await self._eval(client, script, key, args, limit_s)
        except Exception as exc:  # error replies, timeouts, connection errors, anything else
            self._failed(exc)
            breaker.failure()
            return False, None
        breaker.success()
        return True, reply

    def _failed(self, exc: Exception) -> None:
        counters = self._counters
        if isinstance(exc, (TimeoutError, RedisTimeoutError)):
            counters.timeouts += 1
            self.last_failure = "timeout"
            return
        if isinstance(exc, ResponseError):
            counters.error_replies += 1
        self.last_failure = f"{type(exc).__name__}: {str(exc)[:200]}"

    async def close(self) -> None:
        """Close both clients."""
        for client in (self._lookups, self._writes):
            with contextlib.suppress(Exception):
                await client.aclose()
