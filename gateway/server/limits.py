"""What the HTTP server accepts from clients, read once from `server:` settings."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import GatewayError
from gateway.settings import ServerSettings


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """Timeouts and size caps that keep one slow or hostile client from holding resources."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 32 * 1024
    max_url_bytes: int = 8 * 1024
    max_connections: int = 4096
    max_concurrent_requests: int = 2048

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ClientLimits:
        """The limits a `server:` section configures."""
        return cls(
            header_timeout_s=server.header_timeout_s,
            body_timeout_s=server.body_timeout_s,
            max_header_bytes=server.max_header_bytes,
            max_url_bytes=server.max_url_bytes,
            max_connections=server.max_connections,
            max_concurrent_requests=server.max_concurrent_requests,
        )


def header_too_large(limit: int) -> GatewayError:
    """431: the request line and headers exceed `server.max_header_bytes`."""
    return GatewayError(
        431,
        f"The request headers exceed the limit of {limit} bytes.",
        code="request_header_fields_too_large",
    )


def url_too_long(limit: int) -> GatewayError:
    """414: the request target exceeds `server.max_url_bytes`."""
    return GatewayError(
        414, f"The request URL exceeds the limit of {limit} bytes.", code="uri_too_long"
    )


def request_timeout(what: str, seconds: float) -> GatewayError:
    """408: the client did not send its request `what` within `seconds`."""
    return GatewayError(
        408,
        f"The request {what} did not arrive within {seconds:g} s.",
        code="request_timeout",
    )


def over_capacity(what: str) -> GatewayError:
    """503 with Retry-After: more connections or requests than the server takes at once."""
    return GatewayError(
        503,
        f"The gateway is at its limit of concurrent {what}; retry shortly.",
        code="server_overloaded",
        retry_after_s=1,
    )


def malformed(reason: str) -> GatewayError:
    """400 for a request the HTTP parser rejects."""
    return GatewayError(400, f"Invalid HTTP request: {reason}.", code="invalid_http_request")
