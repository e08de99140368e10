"""The keep-alive connections to one origin: a LIFO stack of idle ones and a bounded count."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.proxy.h1conn import H1Connection
from gateway.proxy.upstream import UpstreamTimeout, UpstreamUnavailable


class OriginPool:
    """Connections to one (host, port): O(1) checkout and checkin, at most `limit` at a time."""

    # `total` counts open and connecting connections. A freed slot or a returned connection
    # goes straight to the oldest waiter. Idle connections are pushed and popped at the end of
    # `idle`, which therefore stays sorted by age: expiry drops the oldest from the front.

    __slots__ = (
        "_connect_timeout_s",
        "_high_water",
        "_keepalive_expiry_s",
        "_limit",
        "_on_idle",
        "_read_timeout_s",
        "_tls",
        "_waiters",
        "closed",
        "host",
        "idle",
        "loop",
        "port",
        "total",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        *,
        limit: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_expiry_s: float,
        high_water: int,
        on_idle: Callable[[], None],
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self._limit = limit
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._keepalive_expiry_s = keepalive_expiry_s
        self._high_water = high_water
        self._on_idle = on_idle
        # TLS: the context, and the name sent as SNI and checked against the certificate.
        self._tls: dict[str, Any] = {}
        if tls is not None:
            self._tls = {"ssl": tls, "server_hostname": server_hostname or host}
        self._waiters: deque[asyncio.Future[H1Connection | None]] = deque()
        self.idle: list[H1Connection] = []
        self.total = 0
        self.closed = False

    async def acquire(self, deadline: float, *, fresh: bool = False) -> H1Connection:
        """A connection for one exchange: an idle one (unless `fresh`), a new one, or the next
        one freed before `deadline`."""
        if self.closed:
            raise UpstreamUnavailable("the upstream client is closed")
        if not fresh:
            conn = self.pop_idle()
            if conn is not None:
                return conn
        if self.total < self._limit:
            self.total += 1
            return await self._connect(deadline)
        if fresh and self.idle:
            # Take over the slot of the oldest idle connection.
            oldest = self.idle.pop(0)
            oldest.in_pool = False
            oldest.close(notify=False)
            return await self._connect(deadline)
        return await self._wait(deadline)

    def checkin(self, conn: H1Connection) -> None:
        """Take back a connection whose exchange ended cleanly."""
        if self.closed:
            conn.close()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.in_pool = True
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        self._on_idle()

    def lost(self, conn: H1Connection) -> None:
        """A connection closed: forget it and free its slot."""
        if conn.in_pool:
            conn.in_pool = False
            self.idle.remove(conn)
        self._free_slot()

    def drop_expired(self, now: float) -> int:
        """Close idle connections past the keep-alive expiry; returns how many stay idle."""
        cutoff = now - self._keepalive_expiry_s
        idle = self.idle
        stale = 0
        while stale < len(idle) and idle[stale].idle_since <= cutoff:
            stale += 1
        if stale:
            expired = idle[:stale]
            del idle[:stale]
            for conn in expired:
                conn.in_pool = False
                conn.close()
        return len(idle)

    def close(self) -> None:
        """Close every idle connection; in-flight ones close when their exchange ends."""
        self.closed = True
        while self.idle:
            conn = self.idle.pop()
            conn.in_pool = False
            conn.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamUnavailable("the upstream client is closed"))

    def pop_idle(self) -> H1Connection | None:
        """The most recently used idle connection, unless it has expired (then all have)."""
        idle = self.idle
        if not idle:
            return None
        conn = idle.pop()
        conn.in_pool = False
        if conn.idle_since > self.loop.time() - self._keepalive_expiry_s:
            return conn
        # The newest idle connection has expired, so every older one has too.
        conn.close()
        self.drop_expired(self.loop.time())
        return None

    def _free_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter, which connects
                return
        self.total -= 1

    async def _wait(self, deadline: float) -> H1Connection:
        waiter: asyncio.Future[H1Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                conn = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(waiter.result())
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    f"all {self._limit} connections to {self.host}:{self.port} stayed busy"
                ) from None
            raise
        if conn is None:
            return await self._connect(deadline)
        return conn

    def _give_back(self, conn: H1Connection | None) -> None:
        if conn is None:
            self._free_slot()
        else:
            self.checkin(conn)

    async def _connect(self, deadline: float) -> H1Connection:
        """Open a connection in a slot already counted in `total`."""
        loop = self.loop
        conn = H1Connection(
            loop, self, read_timeout_s=self._read_timeout_s, high_water=self._high_water
        )
        left = deadline - loop.time()
        timeout = min(self._connect_timeout_s, left)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, self.host, self.port, **self._tls)
        except BaseException as exc:
            conn.close(notify=False)
            self._free_slot()
            if isinstance(exc, (OSError, TimeoutError)):
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                # The first-byte deadline, not the connect timeout, cut this one short.
                late = isinstance(exc, TimeoutError) and left < self._connect_timeout_s
                error = UpstreamTimeout if late else UpstreamUnavailable
                raise error(f"cannot connect to {self.host}:{self.port}: {reason}") from exc
            raise
        return conn
