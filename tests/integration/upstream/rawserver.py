"""A scripted HTTP/1.1 server on the test's own event loop, for exact control of the wire."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Handler = Callable[["Conn"], Awaitable[None]]


@dataclass
class Request:
    """One request as the server read it."""

    head: bytes
    body: bytes

    @property
    def line(self) -> bytes:
        """The request line."""
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (case-insensitive name)."""
        for raw in self.head.split(b"\r\n")[1:]:
            key, _, value = raw.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None


class Conn:
    """One accepted connection: read requests, write raw bytes, watch for the client leaving."""

    def __init__(
        self,
        server: RawServer,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.index = index
        self.reader = reader
        self.writer = writer

    async def request(self) -> Request | None:
        """The next request, or None when the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        request = Request(head, b"")
        length = int(request.header(b"content-length") or 0)
        if length:
            request.body = await self.reader.readexactly(length)
        self.server.requests.append(request)
        return request

    async def write(self, data: bytes) -> None:
        """Write bytes and wait until the transport takes them."""
        self.writer.write(data)
        await self.writer.drain()

    async def respond(self, status: int = 200, body: bytes = b"", headers: bytes = b"") -> None:
        """A content-length framed response."""
        await self.write(
            b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s" % (status, len(body), headers, body)
        )

    async def stream_head(self, headers: bytes = b"content-type: text/event-stream\r\n") -> None:
        """The head of a chunked 200 response (the body follows as `chunk()`s)."""
        await self.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n%s\r\n" % headers)

    async def chunk(self, data: bytes) -> None:
        """One chunk of a chunked body (b"" ends the body)."""
        if data:
            await self.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            await self.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Kill the connection at once (a reset, as when the process dies)."""
        self.writer.transport.abort()

    async def wait_closed_by_client(self) -> None:
        """Return once the client has closed its end (EOF or reset)."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass


async def keep_alive(conn: Conn) -> None:
    """Answer every request on the connection with a small body naming the request line."""
    while (request := await conn.request()) is not None:
        await conn.respond(200, b"ok " + request.line + b" " + request.body)


class RawServer:
    """Serves each accepted connection with `handler`; counts connections and closes."""

    def __init__(self, handler: Handler = keep_alive) -> None:
        self.handler = handler
        self.connections = 0
        self.finished = 0
        self.requests: list[Request] = []
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.port = 0
        self.scheme = "http"

    @property
    def url(self) -> str:
        """Base URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> RawServer:
        """Listen on a free port of `host` (TLS with `tls`)."""
        self.host = host
        self.scheme = "https" if tls is not None else "http"
        self._server = await asyncio.start_server(self._serve, host, 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks)
            await self._server.wait_closed()

    async def wait_finished(self, n: int) -> None:
        """Wait until `n` connection handlers have returned (bounded by the test timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.finished >= n)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(Conn(self, self.connections, reader, writer))
        except (ConnectionError, asyncio.CancelledError):
            # Cancelled only by stop(); ending quietly keeps asyncio from logging the handler.
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            async with self._changed:
                self.finished += 1
                self._changed.notify_all()
