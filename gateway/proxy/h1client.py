"""A lean HTTP/1.1 upstream client: asyncio protocols, httptools parsing, LIFO keep-alive pools."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from gateway.proxy.h1conn import H1Connection, StaleConnection
from gateway.proxy.h1pool import OriginPool
from gateway.proxy.upstream import (
    Headers,
    UpstreamResponse,
    UpstreamTooLarge,
    UpstreamUnavailable,
)

# Headers the client writes itself; a caller's copies would duplicate or contradict them.
_OWN_HEADERS = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Bodies up to this size go out in the same write as the request head.
_COALESCE_BODY_BYTES = 64 * 1024
# Parsed URLs are cached; a fleet has few distinct ones, so the bound only guards misuse.
_MAX_CACHED_URLS = 4096
_DEFAULT_PORTS: Mapping[str, int] = MappingProxyType({"http": 80, "https": 443})


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A client context: the system trust store (plus `ca_file`), hostname checks, HTTP/1.1."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the CA file {str(ca_file)!r}: {exc}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


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

    @property
    def body_complete(self) -> bool:
        """True once the whole body arrived and every chunk of it was handed out."""
        conn = self._conn
        return conn is None or conn.drained

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

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The rest of the body; past `max_bytes` UpstreamTooLarge (aclose() then drops it)."""
        conn = self._conn
        if conn is None:
            return b""
        limit = max_bytes if max_bytes is not None else -1
        if limit >= 0:
            declared = self.header(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                self._drop()
                raise UpstreamTooLarge(f"the body is {int(declared)} bytes, over {limit}")
        parts: list[bytes] = []
        size = 0
        while True:
            data = conn.take()
            if data:
                parts.append(data)
                size += len(data)
                if 0 <= limit < size:
                    self._drop()
                    raise UpstreamTooLarge(f"the body ran over {limit} bytes")
            elif conn.complete:
                break
            else:
                await conn.body_waiter()
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _drop(self) -> None:
        """Close the connection whatever was read (the rest of the body is not wanted)."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.close()

    async def aclose(self) -> None:
        """Pool the connection if the body ended cleanly and keep-alive allows, else close it."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        conn.release()


class _Tls:
    """How to open TLS to one origin, and the options it was made from."""

    __slots__ = ("context", "options", "server_name")

    def __init__(
        self, context: ssl.SSLContext, server_name: str | None, options: tuple[str, ...] = ()
    ) -> None:
        self.context = context
        self.server_name = server_name
        self.options = options


class _Target:
    """A parsed URL: its origin's pool and the request-line tail with the Host header."""

    __slots__ = ("line_tail", "pool")

    def __init__(self, pool: OriginPool, line_tail: bytes) -> None:
        self.pool = pool
        self.line_tail = line_tail


class H1Upstream:
    """Pooled HTTP/1.1 client for http:// and https:// backends (one pool per origin)."""

    # Idle connections are reused newest first and expire after `keepalive_expiry_s`, checked
    # on checkout and by a sweep that is scheduled only while connections are idle. Pools
    # bind to the loop of their first request. An https:// origin uses the TLS options given
    # to `configure_tls`, else the system trust store with the URL's host as SNI.

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
        self._pools: dict[tuple[str, str, int], OriginPool] = {}
        self._tls: dict[tuple[str, int], _Tls] = {}
        self._default_tls: ssl.SSLContext | None = None
        self._targets: dict[str, _Target] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Headers,
        *,
        timeout_s: float,
        read_timeout_s: float | None = None,
    ) -> UpstreamResponse:
        """Send a request and return once the response head is in.

        Raises UpstreamTimeout when no response head arrives within `timeout_s` (pool wait,
        connect and head together; the body's first byte is due by then too), and
        UpstreamUnavailable when none can; a pooled connection found closed before any
        response byte is replaced by a fresh one once, transparently. `read_timeout_s`
        (default: the client's) bounds each later wait for body bytes. Every response must
        be `aclose()`d.
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
            await conn.exchange(request, body, head_only, deadline, read_timeout_s)
        except StaleConnection:
            conn = await pool.acquire(deadline, fresh=True)
            try:
                await conn.exchange(request, body, head_only, deadline, read_timeout_s)
            except StaleConnection as exc:
                raise UpstreamUnavailable(str(exc)) from exc
        return H1Response(conn)

    def configure_tls(
        self, base_url: str, *, ca_file: str | Path | None = None, server_name: str | None = None
    ) -> None:
        """TLS options for the https:// origin of `base_url`: a CA file trusted besides the
        system store, and the SNI name the certificate must match (default: the URL's host).

        Raises ValueError for a URL that is not https:// or a CA file that cannot be loaded.
        """
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"TLS options need an https:// URL, got {base_url!r}")
        key = (parts.hostname, parts.port or 443)
        options = (str(ca_file or ""), server_name or "")
        known = self._tls.get(key)
        if known is not None and known.options == options:
            return
        self._tls[key] = _Tls(tls_context(ca_file), server_name, options)
        # Connections opened with other options are not reused (busy ones finish first).
        pool = self._pools.pop(("https", *key), None)
        if pool is not None:
            pool.close()
        self._targets.clear()

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
        scheme = parts.scheme
        default_port = _DEFAULT_PORTS.get(scheme)
        if default_port is None:
            raise ValueError(f"only http:// and https:// URLs are supported, got {url!r}")
        host = parts.hostname
        if not host:
            raise ValueError(f"URL has no host: {url!r}")
        port = parts.port or default_port
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            if self._closed:
                raise UpstreamUnavailable("the upstream client is closed")
            pool = self._new_pool(host, port, scheme == "https")
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

    def _new_pool(self, host: str, port: int, secure: bool) -> OriginPool:
        tls = self._tls.get((host, port)) if secure else None
        if secure and tls is None:
            if self._default_tls is None:
                self._default_tls = tls_context()
            tls = _Tls(self._default_tls, None)
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
            tls=tls.context if tls is not None else None,
            server_hostname=tls.server_name if tls is not None else None,
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
