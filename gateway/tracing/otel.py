"""Request spans through the OpenTelemetry SDK, exported over OTLP/HTTP (the `otel` extra)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import orjson
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

from gateway.api.asgi import Scope, header_value
from gateway.errors import GatewayError
from gateway.proxy.usage import parse_usage
from gateway.tracing import (
    TRACEPARENT,
    TRACESTATE,
    Headers,
    PassThrough,
    RequestTrace,
    TraceParent,
    Tracing,
)
from gateway.tracing import semconv as sc

if TYPE_CHECKING:
    from gateway.admission.limits import Verdict
    from gateway.api.request import InferenceRequest
    from gateway.fleet.registry import Backend
    from gateway.placement import Placement
    from gateway.proxy.forward import ProxyOutcome
    from gateway.settings import TracingSettings

INSTRUMENTATION = "prefix-gateway"
# The routing span keeps the best few backends of the ranking (each with its scores).
RANKING_CHARS = 512
_ERROR = StatusCode.ERROR


class OtelTracing(Tracing):
    """Spans for every request on one tracer provider (never the process-global one)."""

    def __init__(self, provider: TracerProvider) -> None:
        super().__init__()
        self._provider = provider
        self._tracer = provider.get_tracer(INSTRUMENTATION, schema_url=sc.SCHEMA_URL)

    @classmethod
    def from_settings(
        cls, settings: TracingSettings, exporter: SpanExporter | None = None
    ) -> OtelTracing:
        """A provider sampling `sample_ratio` of new traces (a client's sampled flag is
        followed), exporting in batches to `otlp_endpoint`, or to `exporter` as spans end."""
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
            resource=Resource.create({sc.SERVICE_NAME: settings.service_name}),
            shutdown_on_exit=False,
        )
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            endpoint = str(settings.otlp_endpoint) if settings.otlp_endpoint else None
            otlp = OTLPSpanExporter(
                endpoint=endpoint,
                headers=dict(settings.otlp_headers) or None,
                timeout=settings.export_timeout_s,
            )
            provider.add_span_processor(BatchSpanProcessor(otlp))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        """Spans are recorded (those sampled)."""
        return True

    def begin(self, scope: Scope) -> RequestTrace:
        """A server span, the client's `traceparent` (if valid) its parent."""
        parent = TraceParent.parse(header_value(scope, TRACEPARENT))
        context = None
        if parent is not None:
            state = header_value(scope, TRACESTATE)
            remote = SpanContext(
                parent.trace_id,
                parent.span_id,
                is_remote=True,
                trace_flags=TraceFlags(parent.flags),
                trace_state=TraceState.from_header([state.decode("latin-1")]) if state else None,
            )
            context = trace_api.set_span_in_context(NonRecordingSpan(remote))
        root = self._tracer.start_span(scope["path"], context=context, kind=SpanKind.SERVER)
        if not root.is_recording():
            # Sampled out: no child spans (each costs the SDK microseconds for nothing); the
            # backends still join the trace, told it is not sampled, with this hop's span id.
            own = root.get_span_context()
            header = TraceParent(own.trace_id, own.span_id, int(own.trace_flags)).header()
            carried = own.trace_state
            return PassThrough(header, carried.to_header().encode("latin-1") if carried else None)
        return SpanTrace(self._tracer, root)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Export every span ended so far."""
        return self._provider.force_flush(int(timeout_s * 1000))

    async def close(self) -> None:
        """Export what is left (in a thread: the exporter blocks) and stop."""
        await asyncio.to_thread(self._provider.shutdown)


class AttemptSpan:
    """A client span for one upstream attempt; its id is the parent the backend is told."""

    __slots__ = ("_span", "headers")

    def __init__(self, span: Span, tracestate: bytes) -> None:
        self._span = span
        context = span.get_span_context()
        parent = TraceParent(context.trace_id, context.span_id, int(context.trace_flags))
        traceparent = (TRACEPARENT, parent.header())
        self.headers: Headers = (
            (traceparent, (TRACESTATE, tracestate)) if tracestate else (traceparent,)
        )

    def ended(self, result: str) -> None:
        """Its outcome, the HTTP status the backend answered where it did."""
        span = self._span
        span.set_attribute(sc.ATTEMPT_RESULT, result)
        if result.startswith("status_"):
            span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, int(result[7:]))
        if result != "ok":
            span.set_attribute(sc.ERROR_TYPE, result)
            span.set_status(Status(_ERROR))
        span.end()


class SpanTrace(RequestTrace):
    """One request's spans: the server span and its children."""

    __slots__ = ("_admission", "_context", "_model", "_operation", "_root", "_tracer")

    def __init__(self, tracer: trace_api.Tracer, root: Span) -> None:
        self._tracer = tracer
        self._root = root
        self._context = trace_api.set_span_in_context(root)
        self._admission: Span | None = None
        self._operation = "chat"
        self._model = ""

    def _child(self, name: str, kind: SpanKind = SpanKind.INTERNAL) -> Span:
        return self._tracer.start_span(name, context=self._context, kind=kind)

    def admission(self, request: InferenceRequest, tenant: str, tier: str) -> None:
        """Name the server span after the operation and model; the admission span starts."""
        operation = "chat" if request.kind == "chat" else sc.TEXT_COMPLETION
        self._operation, self._model = operation, request.model
        root = self._root
        root.update_name(f"{operation} {request.model}")
        attributes: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: operation,
            sc.GEN_AI_REQUEST_MODEL: request.model,
            sc.GEN_AI_REQUEST_STREAM: request.stream,
            sc.REQUEST_ID: request.request_id.decode("latin-1"),
            sc.TENANT: tenant,
            sc.TIER: tier,
        }
        if request.max_tokens is not None:
            attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] = request.max_tokens
        service_tier = request.data.get("service_tier")
        if isinstance(service_tier, str):
            attributes[sc.GEN_AI_OPENAI_REQUEST_SERVICE_TIER] = service_tier
        root.set_attributes(attributes)
        self._admission = span = self._child("gateway.admission")
        span.set_attributes({sc.TENANT: tenant, sc.TIER: tier})

    def admitted(self, verdict: Verdict | None) -> None:
        """The admission span ends, refused or not."""
        span, self._admission = self._admission, None
        if span is None:
            return
        if verdict is not None:
            span.set_attribute(sc.ADMITTED, verdict.allowed)
            if not verdict.allowed:
                span.set_attribute(sc.ADMISSION_REASON, verdict.reason)
                span.set_status(Status(_ERROR, f"limit: {verdict.reason}"))
        span.end()

    def routed(self, placing: Awaitable[Placement]) -> Awaitable[Placement]:
        """A routing span around the decision, with the chosen backend and the ranking."""
        return self._routed(placing)

    async def _routed(self, placing: Awaitable[Placement]) -> Placement:
        span = self._child("gateway.route")
        try:
            placement = await placing
        except GatewayError as error:
            _failed(span, error)
            span.end()
            raise
        decision = placement.decision
        attributes: dict[str, AttributeValue] = {
            sc.POLICY: decision.policy,
            sc.CANDIDATES: len(decision.ranked),
            sc.PREFIX_BLOCKS: placement.route.total_blocks,
        }
        if decision.ranked:
            chosen = decision.ranked[0]
            attributes[sc.BACKEND] = chosen.id
            attributes[sc.MATCHED_BLOCKS] = placement.route.matched_blocks(chosen)
            attributes[sc.RANKING] = decision.explain()[:RANKING_CHARS]
        span.set_attributes(attributes)
        span.end()
        return placement

    def queued(self, waiting: Awaitable[None]) -> Awaitable[None]:
        """A span for the wait in the admission queue."""
        return self._queued(waiting)

    async def _queued(self, waiting: Awaitable[None]) -> None:
        span = self._child("gateway.queue")
        try:
            await waiting
        except GatewayError as error:
            _failed(span, error)
            raise
        finally:
            span.end()

    def attempt(self, backend: Backend, number: int) -> AttemptSpan:
        """A client span named as GenAI client spans are, with the backend's address."""
        span = self._child(f"{self._operation} {self._model}", SpanKind.CLIENT)
        url = backend.settings.url
        attributes: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: self._operation,
            sc.GEN_AI_REQUEST_MODEL: self._model,
            sc.GEN_AI_PROVIDER_NAME: backend.settings.engine,
            sc.BACKEND: backend.id,
            sc.ATTEMPT: number,
        }
        if url.host is not None:
            attributes[sc.SERVER_ADDRESS] = url.host
        if url.port is not None:
            attributes[sc.SERVER_PORT] = url.port
        span.set_attributes(attributes)
        state = self._root.get_span_context().trace_state
        return AttemptSpan(span, state.to_header().encode("latin-1") if state else b"")

    def finish(self, status: int, outcome: ProxyOutcome) -> None:
        """The server span ends with the status, the backend, and the usage it reported."""
        self.admitted(None)
        root = self._root
        root.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, status)
        root.set_attribute(sc.ATTEMPTS, outcome.attempts)
        backend = outcome.backend
        if backend is not None:
            root.set_attribute(sc.BACKEND, backend.id)
            root.set_attribute(sc.GEN_AI_PROVIDER_NAME, backend.settings.engine)
            if status == 200 and outcome.usage is not None and root.is_recording():
                _response_attributes(root, outcome.usage, backend.settings.reports_cached_tokens)
        if status >= 500:
            root.set_attribute(sc.ERROR_TYPE, str(status))
            root.set_status(Status(_ERROR))
        root.end()


def _failed(span: Span, error: GatewayError) -> None:
    span.set_attribute(sc.ERROR_TYPE, error.code or str(error.status))
    span.set_status(Status(_ERROR, error.message))


def _response_attributes(span: Span, payload: bytes, reports_cached: bool) -> None:
    """`gen_ai.response.*` and `gen_ai.usage.*` from the response (or its usage chunk)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    if not isinstance(data, dict):
        return
    for key, name in (("id", sc.GEN_AI_RESPONSE_ID), ("model", sc.GEN_AI_RESPONSE_MODEL)):
        value = data.get(key)
        if isinstance(value, str):
            span.set_attribute(name, value)
    usage = parse_usage(payload, reports_cached)
    if usage is None:
        return
    for value, name in (
        (usage.prompt_tokens, sc.GEN_AI_USAGE_INPUT_TOKENS),
        (usage.completion_tokens, sc.GEN_AI_USAGE_OUTPUT_TOKENS),
        (usage.cached_tokens, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
        (usage.created_cache_tokens, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
    ):
        if value is not None:
            span.set_attribute(name, value)
