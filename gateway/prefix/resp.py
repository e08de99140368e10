"""A pipelined Redis client for the scripts on the request path: one connection, many calls.

redis-py's asyncio client costs about 300 us of CPU per call here (a pool checkout, a
connection lock, its parser plumbing), more than the Lua script it runs. Every request makes
one or two such calls (an index lookup, a limits check), so they go through this instead:
calls are written back to back on one connection and matched to their replies in order
(Redis answers in the order it reads), parsed by hiredis. Because replies are matched by
position, a caller that gives up (its timeout, a cancel) leaves nothing behind that a later
call could misread: its reply arrives and is dropped. A reply later than `socket_timeout_s`
means the server or the path is stuck: the connection is dropped, every call on it fails,
and the next call connects again.

Errors are redis-py's exception classes, so callers and their breakers treat both clients
alike: `ConnectionError`, `TimeoutError`, `ResponseError` (`NoScriptError` for NOSCRIPT).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Calls in flight on the connection beyond which a call fails at once (the server is not
# keeping up; the breaker decides what happens next).
MAX_IN_FLIGHT = 4096


def encode_command(args: tuple[Any, ...]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _error_of(reply: ResponseError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return reply


class _ReplyProtocol(asyncio.Protocol):
    """Feeds bytes to hiredis and hands each reply to the oldest waiting call."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.lost = False
        self._reader = hiredis.Reader(replyError=ResponseError)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # nothing asked for it: the stream cannot be trusted
                self.fail(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            future = waiting.popleft()
            if future.done():  # its caller gave up
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(_error_of(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        """The connection is over: every call on it fails with `error`."""
        if not self.lost:
            self.lost = True
            if self.transport is not None:
                self.transport.abort()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class PipelinedRedis:
    """One Redis server (``redis://``, ``rediss://``, ``unix://``) over one pipelined connection."""

    def __init__(self, url: str, *, socket_timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._path = parts.path
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        db = parts.path.lstrip("/") if parts.scheme != "unix" else ""
        for pair in parts.query.split("&"):
            name, _, value = pair.partition("=")
            if name == "db":
                db = value
        self._db = int(db) if db else 0
        self._timeout_s = socket_timeout_s
        self._protocol: _ReplyProtocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._closed = False

    async def _connect(self) -> _ReplyProtocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout_s):
            if self._scheme == "unix":
                _, protocol = await loop.create_unix_connection(_ReplyProtocol, self._path)
            else:
                context = ssl.create_default_context() if self._scheme == "rediss" else None
                _, protocol = await loop.create_connection(
                    _ReplyProtocol, self._host, self._port, ssl=context
                )
        setup: list[tuple[Any, ...]] = []
        if self._password is not None:
            user = (self._username,) if self._username else ()
            setup.append(("AUTH", *user, self._password))
        if self._db:
            setup.append(("SELECT", self._db))
        try:
            for command in setup:
                await self._send(protocol, command)
        except BaseException:
            protocol.fail(RedisConnectionError("Redis connection setup failed"))
            raise
        return protocol

    async def _ready(self) -> _ReplyProtocol:
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            return protocol
        if self._closed:
            raise RedisConnectionError("the Redis client is closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent callers share one connect
            protocol = self._protocol
            if protocol is None or protocol.lost:
                try:
                    protocol = await self._connect()
                except (OSError, TimeoutError) as exc:
                    raise RedisConnectionError(f"cannot connect to Redis: {exc!r}") from exc
                self._protocol = protocol
            return protocol

    async def _send(self, protocol: _ReplyProtocol, command: tuple[Any, ...]) -> Any:
        if len(protocol.waiting) >= MAX_IN_FLIGHT:
            raise RedisConnectionError("too many Redis calls in flight")
        transport = protocol.transport
        assert transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        transport.write(encode_command(command))
        try:
            async with asyncio.timeout(self._timeout_s):
                return await future
        except TimeoutError:
            # No reply within the socket timeout: this connection is stuck; drop it.
            protocol.fail(RedisConnectionError("Redis connection dropped after a timeout"))
            raise RedisTimeoutError("Redis did not answer in time") from None

    async def execute(self, *command: Any) -> Any:
        """Send one command and return its reply (raises redis-py's exceptions)."""
        return await self._send(await self._ready(), command)

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        """EVALSHA."""
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def eval(self, source: str, numkeys: int, *keys_and_args: Any) -> Any:
        """EVAL."""
        return await self.execute("EVAL", source, numkeys, *keys_and_args)

    async def aclose(self) -> None:
        """Close the connection; calls still waiting fail."""
        self._closed = True
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("the Redis client is closed"))
            self._protocol = None
