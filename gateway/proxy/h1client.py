"""A lean HTTP/1.1 upstream client: asyncio protocols, httptools parsing, LIFO keep-alive pools."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from gateway.proxy.h1conn import H1Connection, StaleConnection
from gateway.proxy.h1pool import OriginPool
from gateway.proxy.upstream import Headers, UpstreamResponse, UpstreamUnavailable

# Headers the client writes itself; a caller's copies would duplicate or contradict them.
_OWN_HEADERS = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Bodies up to this size go out in the same write as the request head.
_COALESCE_BODY_BYTES = 64 * 1024
# Parsed URLs are cached; a fleet has few distinct ones, so the bound only guards misuse.
_MAX_CACHED_URLS = 4096


class H1Response:
    """A response whose head has arrived; its body is taken from the connection on demand."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: H1Connection) -> None:
        self._conn: H1Connection | None = conn
        self.status = conn.status
        self.headers = conn.headers

    def header(self, name: bytes) -> bytes | None:
        """The first value of a (lower-case) response header."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; whatever is buffered is yielded as one chunk."""
        conn = self._conn
        while conn is not None and conn is self._conn:
            data = conn.take()
            if data:
                yield data
            elif conn.complete:
                return
            else:
                await conn.body_waiter()

    async def read(self) -> bytes:
        """The rest of the body."""
        conn = self._conn
        if conn is None:
            return b""
        parts: list[bytes] = []
        while True:
            data = conn.take()
            if data:
                parts.append(data)
            elif conn.complete:
                break
            else:
                await conn.body_waiter()
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    async def aclose(self) -> None:
        """Pool the connection if the body ended cleanly and keep-alive allows, else close it."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        conn.release()


class _Target:
    """A parsed URL: its origin's pool and the request-line tail with the Host header."""

    __slots__ = ("line_tail", "pool")

    def __init__(self, pool: OriginPool, line_tail: bytes) -> None:
        self.pool = pool
        self.line_tail = line_tail


class H1Upstream:
    """Pooled HTTP/1.1 client for plain http:// backends; https:// URLs raise ValueError."""

    # Backends sit on a private network, hence no TLS. Idle connections are reused newest
    # first and expire after `keepalive_expiry_s`, checked on checkout and by a sweep that is
    # scheduled only while connections are idle. Pools bind to the loop of their first request.

    def __init__(
        self,
        *,
        max_connections_per_origin: int = 256,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 300.0,
        keepalive_expiry_s: float = 30.0,
        high_water_bytes: int = 256 * 1024,
    ) -> None:
        if max_connections_per_origin < 1:
            raise ValueError("max_connections_per_origin must be >= 1")
        self._limit = max_connections_per_origin
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._keepalive_expiry_s = keepalive_expiry_s
        self._high_water = high_water_bytes
        self._pools: dict[tuple[str, int], OriginPool] = {}
        self._targets: dict[str, _Target] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Headers, *, timeout_s: float
    ) -> UpstreamResponse:
        """Send a request and return once the response head is in.

        Raises UpstreamUnavailable when no response head arrives within `timeout_s` (pool wait,
        connect and head together); a pooled connection found closed before any response byte
        is replaced by a fresh one once, transparently. Every response must be `aclose()`d.
        """
        target = self._targets.get(url)
        if target is None:
            target = self._parse(url)
        parts = [method.encode("ascii"), target.line_tail]
        for name, value in headers:
            if name.lower() in _OWN_HEADERS:
                continue
            if b"\n" in value or b"\r" in value:
                raise ValueError(f"header {name!r} contains a line break")
            parts += (name, b": ", value, b"\r\n")
        if body is not None:
            parts += (b"content-length: ", b"%d" % len(body), b"\r\n")
        elif method in _BODY_METHODS:
            parts.append(b"content-length: 0\r\n")
        parts.append(b"connection: keep-alive\r\n\r\n")
        if body is not None and len(body) <= _COALESCE_BODY_BYTES:
            parts.append(body)
            body = None
        request = b"".join(parts)
        pool = target.pool
        deadline = pool.loop.time() + timeout_s
        head_only = method == "HEAD"
        conn = pool.pop_idle() or await pool.acquire(deadline)
        try:
            await conn.exchange(request, body, head_only, deadline)
        except StaleConnection:
            conn = await pool.acquire(deadline, fresh=True)
            try:
                await conn.exchange(request, body, head_only, deadline)
            except StaleConnection as exc:
                raise UpstreamUnavailable(str(exc)) from exc
        return H1Response(conn)

    async def aclose(self) -> None:
        """Close every pooled connection; later sends fail with UpstreamUnavailable."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self._pools.values():
            pool.close()

    def _parse(self, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, got {url!r}")
        host = parts.hostname
        if not host:
            raise ValueError(f"URL has no host: {url!r}")
        port = parts.port or 80
        key = (host, port)
        pool = self._pools.get(key)
        if pool is None:
            if self._closed:
                raise UpstreamUnavailable("the upstream client is closed")
            pool = self._new_pool(host, port)
            self._pools[key] = pool
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        authority = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            authority += f":{port}"
        line_tail = f" {path} HTTP/1.1\r\nhost: {authority}\r\n".encode("ascii")
        target = _Target(pool, line_tail)
        if len(self._targets) >= _MAX_CACHED_URLS:
            self._targets.clear()
        self._targets[url] = target
        return target

    def _new_pool(self, host: str, port: int) -> OriginPool:
        return OriginPool(
            asyncio.get_running_loop(),
            host,
            port,
            limit=self._limit,
            connect_timeout_s=self._connect_timeout_s,
            read_timeout_s=self._read_timeout_s,
            keepalive_expiry_s=self._keepalive_expiry_s,
            high_water=self._high_water,
            on_idle=self._schedule_sweep,
        )

    def _schedule_sweep(self) -> None:
        if self._sweeper is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self._keepalive_expiry_s, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        if sum(pool.drop_expired(now) for pool in self._pools.values()):
            self._schedule_sweep()
