"""One HTTP/1.1 client connection: an asyncio.Protocol fed through httptools' response parser."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from gateway.proxy.upstream import (
    UpstreamBroken,
    UpstreamStalled,
    UpstreamTimeout,
    UpstreamUnavailable,
)

# Exchange phases.
_IDLE = 0
_HEAD = 1
_BODY = 2

_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
# A timer may fire a little early (libuv rounds delays to milliseconds).
_TIMER_SLACK_S = 0.001


class StaleConnection(Exception):
    """A reused keep-alive connection closed before any byte of the response (safe to resend)."""


class ConnectionOwner(Protocol):
    """The pool a connection returns to after a clean exchange and reports to when it dies."""

    def checkin(self, conn: H1Connection) -> None:
        """`conn` finished an exchange cleanly and may carry another."""
        ...

    def lost(self, conn: H1Connection) -> None:
        """`conn` is closed for good (by either side); forget it and free its slot."""
        ...


class H1Connection(asyncio.Protocol):
    """A keep-alive connection carrying one exchange at a time, its body buffered in a deque."""

    __slots__ = (
        "_body",
        "_body_seen",
        "_buffered",
        "_eof_body",
        "_error",
        "_got_bytes",
        "_head_deadline",
        "_head_only",
        "_high_water",
        "_interim",
        "_keep_alive",
        "_last_rx",
        "_loop",
        "_owner",
        "_parser",
        "_paused",
        "_phase",
        "_read_timeout_default_s",
        "_read_timeout_s",
        "_timer",
        "_timer_at",
        "_transport",
        "_waiter",
        "closed",
        "complete",
        "headers",
        "idle_since",
        "in_pool",
        "served",
        "status",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        owner: ConnectionOwner,
        *,
        read_timeout_s: float,
        high_water: int,
    ) -> None:
        self._loop = loop
        self._owner = owner
        self._read_timeout_s = read_timeout_s
        self._read_timeout_default_s = read_timeout_s
        self._high_water = high_water
        self._transport: asyncio.Transport | None = None
        self._parser = HttpResponseParser(self)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._last_rx = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._phase = _IDLE
        self._error: Exception | None = None
        self._got_bytes = False
        self._body_seen = False
        self._head_deadline = 0.0
        self._head_only = False
        self._interim = False
        self._keep_alive = False
        self._eof_body = False
        self.closed = False
        self.in_pool = False
        self.idle_since = 0.0
        self.served = 0
        self.status = 0
        self.complete = False
        self.headers: list[tuple[bytes, bytes]] = []

    # ---- used by the pool and the response --------------------------------------------------
    async def exchange(
        self,
        request: bytes,
        body: bytes | None,
        head_only: bool,
        deadline: float,
        read_timeout_s: float | None = None,
    ) -> None:
        """Send a request and wait for the response head; closes the connection on failure.

        `deadline` bounds the head and the body's first byte; `read_timeout_s` each later
        wait for body bytes (default: the connection's).
        """
        if self.closed or self._transport is None:
            if self.served:
                raise StaleConnection("the pooled connection was already closed")
            raise UpstreamUnavailable("the connection is closed")
        self._phase = _HEAD
        self._error = None
        self._got_bytes = False
        self._body_seen = False
        self._read_timeout_s = (
            self._read_timeout_default_s if read_timeout_s is None else read_timeout_s
        )
        self._interim = False
        self._head_only = head_only
        self._head_deadline = deadline
        self.complete = False
        self.status = 0
        self.headers = []
        self._transport.write(request)
        if body:
            self._transport.write(body)
        try:
            while self._phase == _HEAD and self._error is None:
                waiter = self._loop.create_future()
                self._waiter = waiter
                self._arm(deadline)
                await waiter
        except BaseException:
            self.close()
            raise
        if self._error is not None:
            error = self._error
            self.close()
            raise error

    @property
    def drained(self) -> bool:
        """True once the whole body arrived and every byte of it was taken."""
        return self.complete and not self._body

    def take(self) -> bytes:
        """Every body byte received so far and not yet taken (b"" when none)."""
        body = self._body
        if not body:
            return b""
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._paused and not self.closed and self._transport is not None:
            self._paused = False
            # Nothing could arrive while reading was paused: the idle clock restarts now.
            self._last_rx = self._loop.time()
            self._transport.resume_reading()
        return data

    def body_waiter(self) -> asyncio.Future[None]:
        """A future done when more body arrives, the body ends or fails (call when take() is
        empty and the body is not complete); raises the failure if there already is one."""
        if self._error is not None:
            raise self._error
        waiter = self._loop.create_future()
        self._waiter = waiter
        self._arm(self._body_due())
        return waiter

    def release(self) -> None:
        """End the exchange: back to the pool if the connection may be reused, else close it."""
        transport = self._transport
        reusable = (
            self.complete
            and self._keep_alive
            and self._error is None
            and not self.closed
            and not self._head_only
            # A response that came before the whole request body was sent leaves the rest of
            # the body in the write buffer, ahead of any next request.
            and transport is not None
            and not transport.get_write_buffer_size()
        )
        self._phase = _IDLE
        self._body.clear()
        self._buffered = 0
        if not reusable or transport is None:
            self.close()
            return
        if self._paused:
            self._paused = False
            transport.resume_reading()
        self.served += 1
        self._owner.checkin(self)

    def close(self, *, notify: bool = True) -> None:
        """Close the socket; `notify=False` leaves the slot accounting to the caller."""
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()
        if notify:
            self._owner.lost(self)

    # ---- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        if self._phase == _IDLE or self.complete:
            self._abort("the backend sent bytes outside a response")
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            cause = exc.__context__ if exc.__context__ is not None else exc
            self._abort(f"malformed response: {cause}")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._phase == _HEAD:
            if not self._got_bytes and self.served:
                self._fail(StaleConnection("the pooled connection closed before responding"))
            else:
                self._fail(UpstreamUnavailable(f"closed before the response head ({exc})"))
        elif self._phase == _BODY and not self.complete:
            if self._eof_body:
                self.complete = True
                self._keep_alive = False
                self._wake()
            else:
                self._fail(UpstreamBroken(f"connection closed mid-body ({exc})"))
        self.close()

    # ---- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._phase != _HEAD:
            raise HttpParserError("a second response arrived for one request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            if status == 101:
                raise HttpParserError("unexpected protocol upgrade")
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            self._interim = True
            self.headers = []
            return
        self.status = status
        self._keep_alive = self._parser.should_keep_alive()
        self._eof_body = (
            status not in (204, 304)
            and not self._head_only
            and not any(name in _FRAMING_HEADERS for name, _ in self.headers)
        )
        self._phase = _BODY
        if self._head_only:
            # httptools cannot be told to skip a HEAD response's body, so the connection is
            # not reused after a HEAD (see release()).
            self.complete = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        # The consumer awaits a future only when the deque is empty; reading pauses while more
        # than `high_water` bytes wait for it, so a slow client never buffers a whole stream.
        self._body_seen = True
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > self._high_water and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._keep_alive = self._keep_alive and self._parser.should_keep_alive()
        self.complete = True
        self._wake()

    # ---- internals --------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _abort(self, reason: str) -> None:
        if self._phase == _HEAD:
            self._fail(UpstreamUnavailable(reason))
        elif self._phase == _BODY and not self.complete:
            self._fail(UpstreamBroken(reason))
        self.close()

    def _arm(self, at: float) -> None:
        # One timer per connection serves the head deadline and the idle read timeout. It is
        # re-armed lazily when it fires early, so arriving data costs no timer operations.
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._on_timer)
        self._timer_at = at

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _body_due(self) -> float:
        # Until the body's first byte the request's first-byte deadline applies (a stream's
        # head comes before prefill, its first event after); then the idle read timeout.
        if self._body_seen:
            return self._last_rx + self._read_timeout_s
        return self._head_deadline

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiter is None or self._waiter.done():
            return
        heading = self._phase == _HEAD
        due = self._head_deadline if heading else self._body_due()
        if due - self._loop.time() > _TIMER_SLACK_S:
            self._arm(due)
        elif heading:
            self._fail(UpstreamTimeout("no response head before the first-byte deadline"))
        elif not self._body_seen:
            self._fail(UpstreamStalled("no first body byte before the deadline", first_byte=True))
        else:
            idle = self._read_timeout_s
            self._fail(UpstreamStalled(f"no body data for {idle:g} s", first_byte=False))
