"""The upstream HTTP client interface (implemented by `gateway.proxy.h1client.H1Upstream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol


class UpstreamUnavailable(Exception):
    """The backend could not be reached or sent no response headers (safe to retry elsewhere)."""


class UpstreamTimeout(UpstreamUnavailable):
    """No response head (or no free connection) before the first-byte deadline."""


class UpstreamBroken(Exception):
    """The backend's response broke off after it had started."""


class UpstreamStalled(UpstreamBroken):
    """The body stopped coming: no first byte by the deadline, or none for the idle timeout."""

    def __init__(self, message: str, *, first_byte: bool) -> None:
        super().__init__(message)
        self.first_byte = first_byte


class UpstreamTooLarge(UpstreamBroken):
    """The body outgrew the limit it was read with (the connection is dropped)."""


Headers = Sequence[tuple[bytes, bytes]]


class UpstreamResponse(Protocol):
    """A response whose headers have arrived; the body is read on demand."""

    status: int

    def header(self, name: bytes) -> bytes | None:
        """The first value of a (lower-case) response header."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as raw byte chunks, as they arrive. Raises UpstreamBroken on failure."""
        ...

    @property
    def body_complete(self) -> bool:
        """True once the whole body arrived and `chunks()` handed out every byte of it."""
        ...

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The whole body. Raises UpstreamBroken on failure, UpstreamTooLarge past `max_bytes`."""
        ...

    async def aclose(self) -> None:
        """Release the connection (closing it if the body was not read to the end)."""
        ...


class UpstreamClient(Protocol):
    """Sends one request to a backend and returns once the response headers are in."""

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
        """Send and wait for the response head; `timeout_s` also bounds the body's first byte,
        `read_timeout_s` (default: the client's) each later wait for body bytes.

        Raises UpstreamUnavailable when no response started (UpstreamTimeout: not in time).
        """
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...
