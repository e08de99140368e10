"""Runs the Redis index's Lua scripts under hard timeouts and a circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.prefix.breaker import CircuitBreaker
from gateway.prefix.index import IndexCounters
from gateway.prefix.redis_scripts import LuaScript


def _client(url: str, max_connections: int, socket_timeout_s: float) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=None,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
    )
    return Redis.from_pool(pool)


class GuardedScripts:
    """Two connection pools (lookups never queue behind writes), hard timeouts and a breaker.

    A call cancelled by its timeout makes redis-py disconnect that connection before it goes
    back to the pool, so a late reply can never be read as another command's answer. Redis
    error replies (a script error, OOM) mean the transport works: they do not trip the breaker.
    """

    def __init__(
        self,
        url: str,
        *,
        breaker: CircuitBreaker,
        counters: IndexCounters,
        max_connections: int,
        socket_timeout_s: float,
    ) -> None:
        self.breaker = breaker
        self._counters = counters
        self._lookups = _client(url, max_connections, socket_timeout_s)
        self._writes = _client(url, max_connections, socket_timeout_s)

    async def _eval(
        self, client: Redis, script: LuaScript, key: bytes, args: Sequence[Any], limit_s: float
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
        try:
            reply = await self._eval(client, script, key, args, limit_s)
        except ResponseError:
            self.breaker.success()
            return False, None
        except Exception as exc:  # timeouts, connection errors, anything unexpected
            if isinstance(exc, (TimeoutError, RedisTimeoutError)):
                self._counters.timeouts += 1
            self.breaker.failure()
            return False, None
        self.breaker.success()
        return True, reply

    async def close(self) -> None:
        """Close both connection pools."""
        for client in (self._lookups, self._writes):
            with contextlib.suppress(Exception):
                await client.aclose(close_connection_pool=True)
