"""The upstream HTTP client interface (implemented by `gateway.proxy.h1client.H1Upstream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol


class UpstreamUnavailable(Exception):
    """The backend could not be reached or sent no response headers (safe to retry elsewhere)."""


class UpstreamBroken(Exception):
    """The backend's response broke off after it had started."""


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

    async def read(self) -> bytes:
        """The whole body. Raises UpstreamBroken on failure."""
        ...

    async def aclose(self) -> None:
        """Release the connection (closing it if the body was not read to the end)."""
        ...


class UpstreamClient(Protocol):
    """Sends one request to a backend and returns once the response headers are in."""

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Headers, *, timeout_s: float
    ) -> UpstreamResponse:
        """Raises UpstreamUnavailable when no response started."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...
