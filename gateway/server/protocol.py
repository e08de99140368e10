"""uvicorn's httptools protocol, hardened: head and body deadlines, size caps, OpenAI errors.

uvicorn gives the ASGI plumbing, keep-alive, pipelining and flow control; what it lacks for
a gateway facing the internet is added here, on the documented `http=` protocol-class hook:
a deadline for the request head and one for the body, caps on head and URL bytes (431, 414),
caps on concurrent connections and requests (503 with Retry-After), an idle deadline before
the first request, and every error it writes itself in OpenAI's shape. A response's head
goes out with its first body bytes, in one write.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.errors import GatewayError
from gateway.server.limits import (
    ClientLimits,
    header_too_large,
    malformed,
    over_capacity,
    request_timeout,
    url_too_long,
)

log = logging.getLogger("gateway.server")

# How long a refused connection may go on sending (discarded) before it is closed.
LINGER_S = 1.0
# Bytes of the request line besides the target ("POST " ... " HTTP/1.1\r\n"), about.
_LINE_OVERHEAD = 32


class _Reject(Exception):
    """Raised inside a parser callback to answer `error` and close the connection."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def error_response(error: GatewayError) -> bytes:
    """A complete HTTP/1.1 response for `error`, closing the connection."""
    body = error.body()
    try:
        phrase = http.HTTPStatus(error.status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {error.status} {phrase}".encode()]
    lines += [name + b": " + value for name, value in error.headers()]
    lines += [b"content-length: " + str(len(body)).encode(), b"connection: close", b"", body]
    return b"\r\n".join(lines)


def gateway_app(app: Any) -> Any:
    """The gateway app under uvicorn's middleware wrappers (each keeps the next in `.app`)."""
    for _ in range(8):
        if app is None or hasattr(app, "client_limits"):
            return app
        app = getattr(app, "app", None)
    return app


class HeadWithBody:
    """The transport as one response's cycle sees it: the head waits for the first body bytes.

    uvicorn writes the response head as soon as the application starts the response, then
    each body part; the head is held instead and goes out with the first body bytes in one
    write (or at the end of the loop step at the latest, when none came), which saves a
    system call and a packet per response.
    """

    __slots__ = ("_held", "_loop", "_transport", "_written")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._written = False

    def write(self, data: bytes) -> None:
        """The first write (the head) is held; later ones go out after it, at once."""
        if not self._written:
            self._written = True
            self._held = data
            self._loop.call_soon(self.flush)
            return
        held = self._held
        if held is None:
            self._transport.write(data)
            return
        self._held = None
        self._transport.write(held + data)

    def flush(self) -> None:
        """Write what is held, if anything (and the connection still stands)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        """Write what is held, then close the connection."""
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """True when the connection is closing or closed."""
        return self._transport.is_closing()


class GatewayHttpProtocol(HttpToolsProtocol):
    """One client connection (see the module docstring for what it adds to uvicorn's)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # The gateway app carries its limits and counters (uvicorn builds one protocol per
        # connection from the class alone, also in worker processes).
        app = gateway_app(self.app)
        limits = getattr(app, "client_limits", None)
        self._limits: ClientLimits = limits if isinstance(limits, ClientLimits) else ClientLimits()
        self._on_refused: Callable[[str], None] | None = getattr(app, "count_refusal", None)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        self._phase_s = 0.0
        self._phase_ends = 0.0
        self._in_head = False
        self._head_started_now = False
        self._head_raw = 0
        self._chunk_bytes = 0
        self._closed_by_us = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Take the connection, or refuse it past `max_connections`; arm the idle deadline."""
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            self._refuse(over_capacity("connections"))
            return
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadlines with the connection."""
        self._drop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, answering what it or a limit rejects in OpenAI's shape."""
        if self._closed_by_us:
            return
        self._unset_keepalive_if_required()
        self._chunk_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._refuse(cause.error)
                return
            raise
        except httptools.HttpParserError as exc:
            self._refuse(malformed(str(exc).rstrip(".") or "unparseable"))
            return
        except httptools.HttpParserUpgrade:
            self._refuse(malformed("protocol upgrades are not supported"))
            return
        if self._in_head:
            # Bytes after the chunk the head started in (that one is measured exactly once
            # the head is complete): an unterminated header shows up only here.
            if self._head_started_now:
                self._head_started_now = False
            else:
                self._head_raw += len(data)
            if self._head_raw > self._limits.max_header_bytes:
                self._refuse(header_too_large(self._limits.max_header_bytes))

    def send_400_response(self, msg: str) -> None:
        """uvicorn's own parse-error answer, in OpenAI's shape."""
        self._refuse(malformed(msg.rstrip(".")))

    def on_message_begin(self) -> None:
        """A request starts: its head must be complete within `header_timeout_s`."""
        super().on_message_begin()
        self._in_head = True
        self._head_started_now = True
        self._head_raw = 0
        self._arm(self._limits.header_timeout_s, "headers")

    def on_headers_complete(self) -> None:
        """The head is in: check its size, the request cap, then read the body in time."""
        self._in_head = False
        limits = self._limits
        if len(self.url) > limits.max_url_bytes:
            raise _Reject(url_too_long(limits.max_url_bytes))
        # A head that arrived within one chunk no larger than the cap cannot exceed it.
        if not self._head_started_now or self._chunk_bytes > limits.max_header_bytes:
            size = _LINE_OVERHEAD + len(self.url)
            size += sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > limits.max_header_bytes:
                raise _Reject(header_too_large(limits.max_header_bytes))
        if len(self.tasks) >= limits.max_concurrent_requests:
            raise _Reject(over_capacity("requests"))
        self._arm(limits.body_timeout_s, "body")
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:
            cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def _arm(self, seconds: float, what: str) -> None:
        """Set the current phase's deadline; one timer per connection serves every phase.

        The timer is armed only when none is pending, and re-armed when it fires early for a
        later phase, so a busy keep-alive connection costs no timer calls per request.
        """
        self._phase = what
        self._phase_s = seconds
        self._phase_ends = self.loop.time() + seconds
        if self._deadline is None:
            self._deadline = self.loop.call_at(self._phase_ends, self._check_deadline)

    def _drop_timer(self) -> None:
        self._phase = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _check_deadline(self) -> None:
        self._deadline = None
        what = self._phase
        if what is None or self._closed_by_us:
            return
        cycle = self.cycle
        if what == "body" and cycle is not None and not cycle.more_body:
            self._phase = None  # the whole request arrived
            return
        if self.loop.time() < self._phase_ends:
            self._deadline = self.loop.call_at(self._phase_ends, self._check_deadline)
            return
        log.info("closing a connection from %s: request %s too slow", self.client, what)
        # A body still trickling in after its request was answered is closed without a word.
        answered = what == "body" and cycle is not None and cycle.response_started
        self._refuse(request_timeout(what, self._phase_s), answer=not answered)

    def _refuse(self, error: GatewayError, *, answer: bool = True) -> None:
        """Answer `error` (unless a response is under way) and close the connection."""
        self._drop_timer()
        self._unset_keepalive_if_required()
        self._closed_by_us = True
        if self._on_refused is not None:
            self._on_refused(error.code or str(error.status))
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            # The application, if it is waiting for the body, sees the client gone.
            cycle.disconnected = True
            cycle.message_event.set()
        if not self.transport.is_closing():
            if answer and not started:
                self.transport.write(error_response(error))
            self._linger()

    def _linger(self) -> None:
        """Close once the client could read the answer.

        Closing with its input unread would make the kernel reset the connection, and a reset
        can destroy the answer before the client reads it; so the write side shuts first, what
        still arrives is discarded, and the connection closes after `LINGER_S` at most.
        """
        transport = self.transport
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.connections.discard(self)  # no longer served: it does not count against the cap
        if self.flow is not None:
            self.flow.resume_reading()
        self.loop.call_later(LINGER_S, transport.close)
