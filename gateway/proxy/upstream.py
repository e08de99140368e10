"""The upstream HTTP client behind a small interface, with an httpx implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import httpx


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


class _HttpxResponse:
    """An httpx streaming response seen through the UpstreamResponse interface."""

    __slots__ = ("_response", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code

    def header(self, name: bytes) -> bytes | None:
        for key, value in self._response.headers.raw:
            if key.lower() == name:
                return value
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamBroken(f"{type(exc).__name__}: {exc}") from exc

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise UpstreamBroken(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxUpstream:
    """One pooled httpx.AsyncClient with keep-alive, shared by every request."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_expiry_s: float,
    ) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive_expiry_s,
            ),
            timeout=httpx.Timeout(
                connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=None
            ),
            follow_redirects=False,
            trust_env=False,
        )
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Headers, *, timeout_s: float
    ) -> UpstreamResponse:
        request = self._client.build_request(
            method,
            url,
            content=body,
            headers=list(headers),
            timeout=httpx.Timeout(
                connect=min(self._connect_timeout_s, timeout_s),
                read=timeout_s,
                write=timeout_s,
                pool=timeout_s,
            ),
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._client.aclose()
