"""Forwarding one request along the ranked backends: failover before the first byte, relay after."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from gateway.accounting import Charge, Prices
from gateway.api.request import InferenceRequest, with_priority
from gateway.errors import GatewayError
from gateway.fleet.breaker import Admission
from gateway.fleet.registry import Backend
from gateway.metrics import GatewayMetrics
from gateway.proxy.sse import (
    DONE_EVENT,
    ERROR_MARK,
    EventSplitter,
    ends_with_done,
    rewrite_error_events,
)
from gateway.proxy.upstream import (
    UpstreamBroken,
    UpstreamClient,
    UpstreamResponse,
    UpstreamStalled,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from gateway.proxy.usage import Usage, UsageReader, parse_usage
from gateway.settings import UpstreamSettings
from gateway.tracing import RequestTrace

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

FORWARD_HEADERS = ((b"content-type", b"application/json"), (b"accept-encoding", b"identity"))
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# An engine's error body is read up to this much (its message is cut to 200 characters).
ERROR_BODY_BYTES = 64 * 1024
# No attempt starts with less budget left than this (timers may fire a millisecond early).
MIN_ATTEMPT_S = 0.005
TIMEOUT_CODE = "upstream_timeout"
# Attempt results that say nothing about the backend's health: the client left, the backend
# pushed back (429), a stream ended cleanly without `[DONE]`, an error of our own.
_NO_VERDICT = frozenset({"cancelled", "error", "status_429", "truncated"})


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """How long one request may wait on backends (a value per request, e.g. per tier).

    Per attempt: a stream's first event within `first_byte_timeout_s`, a whole answer within
    `response_timeout_s`; every attempt together within `first_byte_budget_s`; then each
    wait for more body bytes within `read_timeout_s`.
    """

    first_byte_timeout_s: float
    first_byte_budget_s: float
    read_timeout_s: float
    response_timeout_s: float

    @classmethod
    def from_settings(cls, settings: UpstreamSettings) -> AttemptLimits:
        """The configured defaults."""
        return cls(
            settings.first_byte_timeout_s,
            settings.first_byte_budget_s,
            settings.read_timeout_s,
            settings.response_timeout_s,
        )

    def first_byte_s(self, stream: bool) -> float:
        """The per-attempt allowance until the first byte for a request of this kind."""
        return self.first_byte_timeout_s if stream else self.response_timeout_s


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
    trace: RequestTrace = field(default_factory=RequestTrace)
    charge: Charge | None = None
    charged: bool = False
    _counts: Usage | None = None
    _counted_from: bytes | None = None

    def usage_counts(self) -> Usage | None:
        """The token counts of the usage the backend reported, parsed once for every reader
        (calibration, limits, accounting); None without usage or a backend."""
        payload = self.usage
        if payload is not self._counted_from:
            self._counted_from = payload
            backend = self.backend
            self._counts = (
                None
                if payload is None or backend is None
                else parse_usage(payload, backend.settings.reports_cached_tokens)
            )
        return self._counts


def charge_of(outcome: ProxyOutcome, prices: Prices, model: str) -> Charge | None:
    """The answered request's tokens and price, from the usage its backend reported (read
    once: a whole answer is charged before its head goes out, for the cache headers)."""
    if not outcome.charged:
        outcome.charged = True
        usage = outcome.usage_counts()
        if usage is not None:
            outcome.charge = prices.charge(model, usage)
    return outcome.charge


def upstream_body(request: InferenceRequest, backend: Backend) -> tuple[bytes, bool]:
    """The body to send `backend`, and whether to strip the usage chunk from its stream.

    The body asking for usage goes where the engine takes `stream_options` (engines default
    `include_usage` to false, vLLM 0.32 included, so the client would not have had it).
    """
    adapter = backend.adapter
    if request.usage_body is None or not adapter.accepts_stream_options:
        body, strip = request.body, False
    else:
        body, strip = request.usage_body, True
    priority = request.engine_priority
    if priority is not None and adapter.accepts_priority and backend.settings.priority_scheduling:
        body = with_priority(body, request.data, priority)
    return body, strip


def healthy(result: str) -> bool | None:
    """The breaker's verdict on an attempt result: 4xx answers are the client's, not failures."""
    if result == "ok":
        return True
    if result in _NO_VERDICT:
        return None
    return result.startswith("status_4")


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


class _Failed(Exception):
    """The attempt failed before anything reached the client."""

    def __init__(self, error: GatewayError, reason: str, *, retry: bool = True) -> None:
        super().__init__(error.message)
        self.error = error
        self.reason = reason
        self.retry = retry


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One attempt's backend, breaker admission and first-byte allowance."""

    backend: Backend
    admission: Admission
    timeout_s: float
    read_timeout_s: float
    # The request's budget, when it cut this attempt's allowance short (else 0).
    budget_s: float = 0.0


class Forwarder:
    """Walks the ranked list the router returned; never decides where a request goes.

    Backends whose circuit breaker refuses the attempt are passed over, and every attempt's
    outcome is reported to its backend's breaker (a stream's once it has ended).
    """

    def __init__(
        self,
        client: UpstreamClient,
        metrics: GatewayMetrics,
        settings: UpstreamSettings,
        *,
        unavailable_retry_s: float = 1.0,
        prices: Prices | None = None,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._settings = settings
        self.prices = prices if prices is not None else Prices({})
        self._limits = AttemptLimits.from_settings(settings)
        self._unavailable_retry_s = unavailable_retry_s

    async def forward(
        self,
        request: InferenceRequest,
        ranked: Sequence[Backend],
        send: Send,
        outcome: ProxyOutcome,
        observer: AttemptObserver,
        limits: AttemptLimits | None = None,
    ) -> None:
        """Send the request to the first backend that takes it and relay its response."""
        limits = limits if limits is not None else self._limits
        allowance = limits.first_byte_s(request.stream)
        loop = asyncio.get_running_loop()
        budget_end = loop.time() + limits.first_byte_budget_s
        last_error: GatewayError | None = None
        refused: list[Backend] = []
        for backend in ranked:
            if outcome.attempts >= self._settings.max_attempts:
                break
            left = budget_end - loop.time()
            if left < MIN_ATTEMPT_S:
                budget = limits.first_byte_budget_s
                last_error = _timeout_error(f"No backend answered within {budget:g} s.")
                break
            admission = backend.state.breaker.admit(time.monotonic())
            if admission is Admission.REFUSED:
                refused.append(backend)
                continue
            if left < allowance:
                attempt = _Attempt(
                    backend, admission, left, limits.read_timeout_s, limits.first_byte_budget_s
                )
            else:
                attempt = _Attempt(backend, admission, allowance, limits.read_timeout_s)
            outcome.attempts += 1
            outcome.backend = backend
            observer.attempt_started(backend)
            try:
                await self._attempt(request, attempt, send, outcome, observer)
                return
            except _Failed as failed:
                if not failed.retry:
                    raise failed.error from None
                last_error = failed.error
            finally:
                observer.attempt_ended(backend)
        raise last_error if last_error is not None else self._unavailable(refused)

    def _unavailable(self, refused: Sequence[Backend]) -> GatewayError:
        now = time.monotonic()
        waits = [b.state.breaker.retry_after_s(now) for b in refused]
        wait = min(waits) if waits else self._unavailable_retry_s
        return GatewayError(
            503,
            "No backend is available for this model.",
            code="no_backend_available",
            retry_after_s=max(1, math.ceil(wait)),
        )

    async def _attempt(
        self,
        request: InferenceRequest,
        attempt: _Attempt,
        send: Send,
        outcome: ProxyOutcome,
        observer: AttemptObserver,
    ) -> None:
        backend = attempt.backend
        url = backend.chat_url if request.kind == "chat" else backend.completions_url
        traced = outcome.trace.attempt(backend, outcome.attempts)
        headers = [
            *FORWARD_HEADERS,
            *backend.auth_headers,
            (b"x-request-id", request.request_id),
            *traced.headers,
        ]
        body, strip_usage = upstream_body(request, backend)
        # Every attempt is counted once, by how it ended, and judged once by its breaker.
        result = "error"
        ended_run = 0
        try:
            response = await self._send(url, body, headers, attempt)
            try:
                if response.status != 200:
                    result = f"status_{response.status}"
                    await self._upstream_error(backend, response)
                ended_run = backend.state.breaker.answered(attempt.admission)
                if request.stream:
                    result = await self._relay_stream(
                        request, attempt, response, send, outcome, observer, strip_usage
                    )
                else:
                    result = await self._relay_whole(
                        request, attempt, response, send, outcome, observer
                    )
            finally:
                await response.aclose()
        except _Failed as failed:
            result = failed.reason
            raise
        except asyncio.CancelledError:
            result = "cancelled"  # the client went away
            raise
        finally:
            self._metrics.count_attempt(backend.id, result)
            traced.ended(result)
            self._judge(attempt, result, ended_run)

    async def _send(
        self, url: str, body: bytes, headers: list[tuple[bytes, bytes]], attempt: _Attempt
    ) -> UpstreamResponse:
        backend = attempt.backend
        try:
            return await self._client.send(
                "POST",
                url,
                body,
                headers,
                timeout_s=attempt.timeout_s,
                read_timeout_s=attempt.read_timeout_s,
            )
        except UpstreamTimeout as exc:
            raise _Failed(_no_first_byte(attempt), "timeout") from exc
        except UpstreamUnavailable as exc:
            error = GatewayError(502, f"Backend {backend.id} is unreachable: {exc}")
            raise _Failed(error, "unavailable") from exc

    def _judge(self, attempt: _Attempt, result: str, ended_run: int) -> None:
        breaker = attempt.backend.state.breaker
        verdict = healthy(result)
        if verdict is None:
            breaker.release(attempt.admission)
        else:
            breaker.record(attempt.admission, verdict, time.monotonic(), ended_run)

    async def _upstream_error(self, backend: Backend, response: UpstreamResponse) -> NoReturn:
        try:
            body = await response.read(ERROR_BODY_BYTES)
        except UpstreamBroken:
            body = b""
        status = response.status
        error = backend.adapter.normalize_error(status, body, response.header(b"retry-after"))
        # A status no client can take (1xx, 204, 3xx, > 599) is a broken backend: try another.
        retry = status in RETRYABLE_STATUSES or not 400 <= status <= 599
        raise _Failed(error, f"status_{status}", retry=retry)

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
        attempt: _Attempt,
        response: UpstreamResponse,
        send: Send,
        outcome: ProxyOutcome,
        observer: AttemptObserver,
    ) -> str:
        backend = attempt.backend
        limit = self._settings.max_response_bytes
        try:
            body = await response.read(limit)
        except UpstreamTooLarge as exc:
            error = GatewayError(
                502, f"Backend {backend.id} sent a response larger than {limit} bytes."
            )
            raise _Failed(error, "too_large", retry=False) from exc
        except UpstreamStalled as exc:
            if exc.first_byte:
                raise _Failed(_no_first_byte(attempt), "timeout") from exc
            idle = attempt.read_timeout_s
            error = _timeout_error(f"Backend {backend.id} sent nothing for {idle:g} s mid-body.")
            raise _Failed(error, "stalled") from exc
        except UpstreamBroken as exc:
            error = GatewayError(502, f"Backend {backend.id} broke off its response: {exc}")
            raise _Failed(error, "broken") from exc
        # Release the upstream connection before the last send: nothing after it may yield, so
        # the accounting that follows is done before any other request can observe the result.
        await response.aclose()
        observer.first_byte(backend)
        start = self._start_message(request, backend, response, outcome, b"application/json")
        headers = start["headers"]
        headers.append((b"content-length", str(len(body)).encode()))
        outcome.tail = outcome.usage = body
        charge = charge_of(outcome, self.prices, request.model)
        if charge is not None:
            headers.extend(charge.headers())
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        outcome.finished = True
        return "ok"

    async def _relay_stream(
        self,
        request: InferenceRequest,
        attempt: _Attempt,
        response: UpstreamResponse,
        send: Send,
        outcome: ProxyOutcome,
        observer: AttemptObserver,
        strip_usage: bool,
    ) -> str:
        backend = attempt.backend
        splitter = EventSplitter(self._settings.max_pending_event_bytes)
        reader = UsageReader(strip_usage)
        rewriting = False
        done = False
        last = b""
        try:
            async for chunk in response.chunks():
                if outcome.first_byte_at is None:
                    observer.first_byte(backend)
                    start = self._start_message(
                        request, backend, response, outcome, b"text/event-stream"
                    )
                    start["headers"].append((b"cache-control", b"no-cache"))
                    await send(start)
                block, raw = splitter.feed(chunk)
                if block:
                    if rewriting or ERROR_MARK in block:
                        block, found = rewrite_error_events(block, backend.adapter)
                        rewriting = rewriting or found
                    block = reader.feed(block)
                    outcome.usage = reader.usage
                    if block:
                        done = ends_with_done(block)
                if raw:
                    # An event past the pending bound goes out unparsed, after anything held.
                    block += reader.flush() + raw
                    done = False
                if not block:
                    continue
                outcome.tail = block
                if response.body_complete:
                    last = block  # the rest of the stream is here: it goes out with the end
                    continue
                await send({"type": "http.response.body", "body": block, "more_body": True})
        except UpstreamBroken as exc:
            if outcome.first_byte_at is None:
                if isinstance(exc, UpstreamStalled):
                    raise _Failed(_no_first_byte(attempt), "timeout") from exc
                error = GatewayError(502, f"Backend {backend.id} broke off the stream: {exc}")
                raise _Failed(error, "broken") from exc
            held = last + reader.flush()
            if held:
                await send({"type": "http.response.body", "body": held, "more_body": True})
            return await self._end_broken_stream(attempt, response, send, outcome, exc)
        if outcome.first_byte_at is None:
            error = GatewayError(502, f"Backend {backend.id} sent an empty stream.")
            raise _Failed(error, "empty")
        closing = last + reader.flush() + splitter.rest()
        if closing:
            done = ends_with_done(closing)
        if rewriting and not done:
            closing += DONE_EVENT
        await response.aclose()
        await send({"type": "http.response.body", "body": closing, "more_body": False})
        outcome.finished = True
        if rewriting:
            return "stream_error"
        return "ok" if done else "truncated"

    async def _end_broken_stream(
        self,
        attempt: _Attempt,
        response: UpstreamResponse,
        send: Send,
        outcome: ProxyOutcome,
        exc: UpstreamBroken,
    ) -> str:
        """End a stream that failed after it started: an in-band error, then `[DONE]`."""
        backend = attempt.backend
        if isinstance(exc, UpstreamStalled):
            idle = attempt.read_timeout_s
            message = f"Backend {backend.id} sent nothing for {idle:g} s mid-stream."
            error, result = _timeout_error(message), "stalled"
        else:
            message = f"Backend {backend.id} broke off the stream: {exc}"
            error, result = GatewayError(502, message), "broken"
        outcome.broken = True
        self._metrics.stream_errors.labels(backend.id).inc()
        await response.aclose()
        # An unfinished event the client already has is ended first, so the error stands alone.
        tail = outcome.tail
        lead = b"" if not tail or tail.endswith((b"\n\n", b"\r\r", b"\r\n\r\n")) else b"\n\n"
        await send({"type": "http.response.body", "body": lead + error.sse_event()})
        outcome.finished = True
        return result


def _timeout_error(message: str) -> GatewayError:
    return GatewayError(504, message, code=TIMEOUT_CODE)


def _no_first_byte(attempt: _Attempt) -> GatewayError:
    if attempt.budget_s:
        within = f"the request's {attempt.budget_s:g} s budget"
    else:
        within = f"{attempt.timeout_s:g} s"
    return _timeout_error(f"Backend {attempt.backend.id} sent no first byte within {within}.")
