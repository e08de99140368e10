"""Fake model servers for trace tests: one that records each request's headers, and an
OTLP/HTTP collector that keeps what it was sent."""

from __future__ import annotations

import threading
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.integration.upstream.backends import ANSWER

MODEL = "rec-model"


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send: Any, status: int, body: bytes, kind: bytes = b"application/json") -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]}
    )
    await send({"type": "http.response.body", "body": body})


class HeaderRecorder:
    """Answers chat completions with `status` (200: a fixed answer with usage) and keeps
    every completion request's headers."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.headers: list[dict[bytes, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _body(receive)
        path = scope["path"]
        if path.endswith("/completions"):
            self.headers.append(dict(scope["headers"]))
            if self.status != 200:
                error = {"error": {"message": "overloaded", "type": "x", "code": self.status}}
                await _respond(send, self.status, orjson.dumps(error))
                return
            await _respond(send, 200, ANSWER)
        elif path == "/v1/models":
            await _respond(send, 200, orjson.dumps({"object": "list", "data": [{"id": MODEL}]}))
        elif path == "/metrics":
            await _respond(send, 404, b"", b"text/plain")
        else:
            await _respond(send, 200, b"{}")


class Collector:
    """An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf) that keeps every request."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.received = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await _body(receive)
        if scope["path"] != "/v1/traces":
            await _respond(send, 404, b"")
            return
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.requests.append(message)
        self.received.set()
        await _respond(
            send, 200, ExportTraceServiceRequest().SerializeToString(), b"application/x-protobuf"
        )

    def spans(self) -> list[tuple[Any, Any, Any]]:
        """Every span received, with its resource and scope."""
        return [
            (resource_spans.resource, scope_spans, span)
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
