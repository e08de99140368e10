"""Small raw-ASGI helpers for the hot path: reading bodies, headers, sending errors."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.api.request import too_large
from gateway.errors import GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")


class ClientGone(Exception):
    """The client disconnected before the request body was read."""


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a lower-case request header."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def request_id_for(scope: Scope) -> bytes:
    """The client's `x-request-id` when it is sane, else a new random one."""
    given = header_value(scope, b"x-request-id")
    if given is not None and _SANE_REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(12).hex().encode()


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing (413) as soon as it exceeds `limit` bytes."""
    declared = header_value(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_error(send: Send, error: GatewayError, extra: list[tuple[bytes, bytes]]) -> None:
    """Answer with an OpenAI-shaped error body."""
    body = error.body()
    headers = [*error.headers(), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
