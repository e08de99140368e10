"""Forwarding one request along the ranked backends: failover before the first byte, relay after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.api.request import InferenceRequest
from gateway.errors import GatewayError
from gateway.fleet.registry import Backend
from gateway.metrics import GatewayMetrics
from gateway.proxy.sse import DONE_EVENT, ERROR_MARK, rewrite_error_events, split_complete
from gateway.proxy.upstream import (
    UpstreamBroken,
    UpstreamClient,
    UpstreamResponse,
    UpstreamUnavailable,
)
from gateway.proxy.usage import take_usage_event
from gateway.settings import UpstreamSettings

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

FORWARD_HEADERS = ((b"content-type", b"application/json"), (b"accept-encoding", b"identity"))
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True)
class ProxyOutcome:
    """What happened to a forwarded request, for accounting."""

    status: int = 0
    backend: Backend | None = None
    first_byte_at: float | None = None
    tail: bytes = b""
    usage: bytes | None = None
    finished: bool = False
    broken: bool = False
    attempts: int = 0
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def upstream_body(request: InferenceRequest, backend: Backend) -> tuple[bytes, bool]:
    """The body to send `backend`, and whether to strip the usage chunk from its stream.

    The body asking for usage goes where the engine takes `stream_options` and the client
    would not have had usage from it anyway (an engine defaulting `include_usage` to true
    sends it to a client that gave `stream_options` without the key).
    """
    adapter = backend.adapter
    if (
        request.usage_body is None
        or not adapter.accepts_stream_options
        or (request.usage_left_to_engine and adapter.usage_by_default)
    ):
        return request.body, False
    return request.usage_body, True


class AttemptObserver(Protocol):
    """Told about each attempt, so load and cache accounting follow the request."""

    def attempt_started(self, backend: Backend) -> None:
        """The request is being sent to `backend`."""
        ...

    def first_byte(self, backend: Backend) -> None:
        """`backend` started answering (its prefill is done)."""
        ...

    def attempt_ended(self, backend: Backend) -> None:
        """The attempt on `backend` is over, whatever its outcome."""
        ...


class _Retry(Exception):
    """The attempt failed before anything reached the client; try the next backend."""

    def __init__(self, error: GatewayError, reason: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.reason = reason


class Forwarder:
    """Walks the ranked list the router returned; never decides where a request goes."""

    def __init__(
        self, client: UpstreamClient, metrics: GatewayMetrics, settings: UpstreamSettings
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._settings = settings

    async def forward(
        self,
        request: InferenceRequest,
        ranked: Sequence[Backend],
        send: Send,
        outcome: ProxyOutcome,
        observer: AttemptObserver,
    ) -> None:
        """Send the request to the first backend that takes it and relay its response."""
        attempts = ranked[: self._settings.max_attempts]
        last_error = GatewayError(503, "No backend is available for this model.", retry_after_s=1)
        for backend in attempts:
            outcome.attempts += 1
            outcome.backend = backend
            observer.attempt_started(backend)
            try:
                await self._attempt(request, backend, send, outcome, observer)
                return
            except _Retry as retry:
                last_error = retry.error
            finally:
                observer.attempt_ended(backend)
        raise last_error

    async def _attempt(
        self,
        request: InferenceRequest,
        backend: Backend,
        send: Send,
        outcome: ProxyOutcome,
        observer: AttemptObserver,
    ) -> None:
        url = backend.chat_url if request.kind == "chat" else backend.completions_url
        headers = [*FORWARD_HEADERS, *backend.auth_headers, (b"x-request-id", request.request_id)]
        body, strip_usage = upstream_body(request, backend)
        # Every attempt is counted once, by how it ended.
        result = "error"
        try:
            response = await self._client.send(
                "POST", url, body, headers, timeout_s=self._settings.first_byte_timeout_s
            )
        except UpstreamUnavailable as exc:
            self._metrics.count_attempt(backend.id, "unavailable")
            raise _Retry(
                GatewayError(502, f"Backend {backend.id} is unreachable: {exc}"), "unavailable"
            ) from exc
        try:
            if response.status != 200:
                result = f"status_{response.status}"
                await self._upstream_error(backend, response)
            elif request.stream:
                await self._relay_stream(
                    request, backend, response, send, outcome, observer, strip_usage
                )
            else:
                await self._relay_whole(request, backend, response, send, outcome, observer)
            result = "broken" if outcome.broken else "ok"
        except _Retry as retry:
            result = retry.reason
            raise
        except asyncio.CancelledError:
            result = "cancelled"  # the client went away
            raise
        finally:
            await response.aclose()
            self._metrics.count_attempt(backend.id, result)

    async def _upstream_error(self, backend: Backend, response: UpstreamResponse) -> None:
        try:
            body = await response.read()
        except UpstreamBroken:
            body = b""
        error = backend.adapter.normalize_error(response.status, body)
        if response.status in RETRYABLE_STATUSES:
            raise _Retry(error, f"status_{response.status}")
        raise error

    def _start_message(
        self,
        request: InferenceRequest,
        backend: Backend,
        response: UpstreamResponse,
        outcome: ProxyOutcome,
        default: bytes,
    ) -> Message:
        outcome.status = 200
        outcome.first_byte_at = time.perf_counter()
        return {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", response.header(b"content-type") or default),
                (b"x-request-id", request.request_id),
                (b"x-gateway-backend", backend.id_bytes),
                *outcome.extra_headers,
            ],
        }

    async def _relay_whole(
        self,
        request: InferenceRequest,
        backend: Backend,
        response: UpstreamResponse,
        send: Send,
        outcome: ProxyOutcome,
        observer: AttemptObserver,
    ) -> None:
        try:
            body = await response.read()
        except UpstreamBroken as exc:
            error = GatewayError(502, f"Backend {backend.id} broke off its response: {exc}")
            raise _Retry(error, "broken") from exc
        # Release the upstream connection before the last send: nothing after it may yield, so
        # the accounting that follows is done before any other request can observe the result.
        await response.aclose()
        observer.first_byte(backend)
        start = self._start_message(request, backend, response, outcome, b"application/json")
        start["headers"].append((b"content-length", str(len(body)).encode()))
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        outcome.finished = True
        outcome.tail = outcome.usage = body

    async def _relay_stream(
        self,
        request: InferenceRequest,
        backend: Backend,
        response: UpstreamResponse,
        send: Send,
        outcome: ProxyOutcome,
        observer: AttemptObserver,
        strip_usage: bool,
    ) -> None:
        pending = b""
        rewriting = False
        try:
            async for chunk in response.chunks():
                if outcome.first_byte_at is None:
                    observer.first_byte(backend)
                    start = self._start_message(
                        request, backend, response, outcome, b"text/event-stream"
                    )
                    start["headers"].append((b"cache-control", b"no-cache"))
                    await send(start)
                block, pending = split_complete(pending + chunk if pending else chunk)
                if not block:
                    continue
                if rewriting or ERROR_MARK in block:
                    block, found = rewrite_error_events(block, backend.adapter)
                    rewriting = rewriting or found
                block, usage = take_usage_event(block, strip_usage)
                if usage is not None:
                    outcome.usage = usage
                    if not block:
                        continue
                outcome.tail = block
                await send({"type": "http.response.body", "body": block, "more_body": True})
        except UpstreamBroken as exc:
            error = GatewayError(502, f"Backend {backend.id} broke off the stream: {exc}")
            if outcome.first_byte_at is None:
                raise _Retry(error, "broken") from exc
            outcome.broken = True
            self._metrics.stream_errors.labels(backend.id).inc()
            await response.aclose()
            await send({"type": "http.response.body", "body": error.sse_event()})
            outcome.finished = True
            return
        if outcome.first_byte_at is None:
            raise _Retry(GatewayError(502, f"Backend {backend.id} sent an empty stream."), "empty")
        closing = pending
        if rewriting and not outcome.tail.endswith(DONE_EVENT):
            closing += DONE_EVENT
        await response.aclose()
        await send({"type": "http.response.body", "body": closing, "more_body": False})
        outcome.finished = True
