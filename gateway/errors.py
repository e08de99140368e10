"""One error type for everything the gateway answers with an error, rendered in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import orjson

# A backend's own Retry-After passes through up to an hour; a longer one (or a broken date)
# would park well-behaved clients for good.
MAX_RETRY_AFTER_S = 3600
SDK_MAX_RETRY_AFTER_S = 60

_TYPE_BY_STATUS: Mapping[int, str] = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "invalid_request_error",
        408: "timeout_error",
        413: "invalid_request_error",
        422: "invalid_request_error",
        429: "rate_limit_exceeded",
        503: "service_unavailable",
        504: "timeout_error",
    }
)


def error_type_for(status: int) -> str:
    """The OpenAI error `type` that clients expect for an HTTP status."""
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


class GatewayError(Exception):
    """An error answered to the client as `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type_for(status)
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def payload(self) -> dict[str, object]:
        """The error object (the value of the top-level `error` key)."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def body(self) -> bytes:
        """The JSON response body."""
        return orjson.dumps({"error": self.payload()})

    def sse_event(self) -> bytes:
        """The in-band form used once a stream has started, followed by `[DONE]`."""
        return b"data: " + self.body() + b"\n\ndata: [DONE]\n\n"

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Response headers that go with the error (content type, retry hints)."""
        headers = [(b"content-type", b"application/json")]
        if self.retry_after_s is not None:
            seconds = max(1, min(MAX_RETRY_AFTER_S, self.retry_after_s))
            headers.append((b"retry-after", str(seconds).encode()))
            # OpenAI's SDKs read this one first and ignore a wait past 60 s (backing off on
            # their own schedule instead, sooner): past 60 it says 60, the longest they keep.
            ms = min(seconds, SDK_MAX_RETRY_AFTER_S) * 1000
            headers.append((b"retry-after-ms", str(ms).encode()))
        elif self.status < 500 and self.status not in (408, 409, 429):
            headers.append((b"x-should-retry", b"false"))
        return headers


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    """A 400 invalid_request_error naming the offending field."""
    return GatewayError(400, message, param=param, code=code)
