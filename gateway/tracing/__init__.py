"""Request tracing: W3C trace context in and out, OpenTelemetry spans when configured.

Chosen once at startup. Off (the default), a request costs one header lookup: a valid client
`traceparent` (and its `tracestate`) goes to the backend as sent, so a traced engine joins
the client's trace, and no object is made for a request that carries none. On, the request
gets a server span (the client's `traceparent` as its parent, or a new trace), spans for
admission, the routing decision, the admission queue and each upstream attempt, and each
attempt sends the backend a `traceparent` naming its own span as the parent.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.api.asgi import Scope, header_value

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from gateway.admission.limits import Verdict
    from gateway.api.request import InferenceRequest
    from gateway.fleet.registry import Backend
    from gateway.placement import Placement
    from gateway.proxy.forward import ProxyOutcome
    from gateway.settings import TracingSettings

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
# Version 00 only: 32 and 16 lower-case hex digits and the flags.
_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
OTEL_EXTRA = "pip install 'prefix-gateway[otel]'"

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A valid W3C `traceparent`: trace id, parent span id, trace flags."""

    trace_id: int
    span_id: int
    flags: int

    @classmethod
    def parse(cls, value: bytes | None) -> TraceParent | None:
        """The header's fields; None unless it is version 00, well formed, ids not all zeros."""
        if value is None:
            return None
        found = _TRACEPARENT.fullmatch(value)
        if found is None:
            return None
        trace_id, span_id = int(found[1], 16), int(found[2], 16)
        if trace_id == 0 or span_id == 0:
            return None
        return cls(trace_id, span_id, int(found[3], 16))

    def header(self) -> bytes:
        """The header value."""
        return b"00-%032x-%016x-%02x" % (self.trace_id, self.span_id, self.flags)


class AttemptTrace(Protocol):
    """One upstream attempt: the headers that carry the trace to the backend, and its end."""

    @property
    def headers(self) -> Headers:
        """Trace context headers to send the backend."""
        ...

    def ended(self, result: str) -> None:
        """The attempt is over (`result` as the forwarder counts it: ok, status_503, ...)."""
        ...


class RequestTrace:
    """One request's trace; this base records nothing and sends nothing (tracing off)."""

    __slots__ = ()

    @property
    def headers(self) -> Headers:
        """Nothing to send upstream."""
        return ()

    def ended(self, result: str) -> None:
        """Nothing to end."""

    def admission(self, request: InferenceRequest, tenant: str, tier: str) -> None:
        """The request was parsed and its tier chosen: admission starts."""

    def admitted(self, verdict: Verdict | None) -> None:
        """Admission is over (`verdict` of the tenant's limits, None when it has none)."""

    def routed(self, placing: Awaitable[Placement]) -> Awaitable[Placement]:
        """`placing` (hash, index lookup, decision), traced."""
        return placing

    def queued(self, waiting: Awaitable[None]) -> Awaitable[None]:
        """A wait in the admission queue, traced."""
        return waiting

    def attempt(self, backend: Backend, number: int) -> AttemptTrace:
        """Attempt `number` (from 1) on `backend` begins."""
        return self

    def finish(self, status: int, outcome: ProxyOutcome) -> None:
        """The request is over with `status` (499: the client left)."""


class PassThrough(RequestTrace):
    """A trace context sent to every backend unchanged: a client's valid one (tracing off),
    or a sampled-out trace's own (tracing on, nothing recorded)."""

    __slots__ = ("_headers",)

    def __init__(self, traceparent: bytes, tracestate: bytes | None) -> None:
        self._headers: Headers = (
            ((TRACEPARENT, traceparent), (TRACESTATE, tracestate))
            if tracestate
            else ((TRACEPARENT, traceparent),)
        )

    @property
    def headers(self) -> Headers:
        """The client's `traceparent` and `tracestate`."""
        return self._headers


class Tracing:
    """Tracing off: no spans; a client's valid `traceparent` is passed on as it came."""

    def __init__(self) -> None:
        self._untraced = RequestTrace()

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded."""
        return False

    def begin(self, scope: Scope) -> RequestTrace:
        """The trace of a request that just arrived (no allocation unless it carries one)."""
        value = header_value(scope, TRACEPARENT)
        if value is None or TraceParent.parse(value) is None:
            return self._untraced
        return PassThrough(value, header_value(scope, TRACESTATE))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Export the spans ended so far (True when all went out)."""
        return True

    async def close(self) -> None:
        """Export what is left and stop."""


def sdk_missing() -> str | None:
    """Why OpenTelemetry tracing cannot run here (the SDK or the OTLP exporter missing)."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        return f"tracing needs the OpenTelemetry SDK and OTLP exporter ({exc}): {OTEL_EXTRA}"
    return None


def build_tracing(settings: TracingSettings, exporter: SpanExporter | None = None) -> Tracing:
    """The configured tracing; `exporter` replaces the OTLP one (tests: an in-memory one)."""
    if not settings.enabled:
        return Tracing()
    missing = sdk_missing()
    if missing is not None:
        from gateway.settings import ConfigError

        raise ConfigError(missing)
    from gateway.tracing.otel import OtelTracing

    return OtelTracing.from_settings(settings, exporter)
