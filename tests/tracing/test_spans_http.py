"""Traces through a running gateway: the client's trace continues through admission, routing
and every upstream attempt, and each backend is told its attempt's span as the parent."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.settings import TracingSettings
from gateway.tracing import TraceParent
from gateway.tracing import semconv as sc
from gateway.tracing.otel import OtelTracing
from tests.support.harness import GatewayHandle, SimFleetHandle
from tests.support.serving import ServerThread
from tests.tracing.backends import MODEL, Collector, HeaderRecorder

CLIENT_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CLIENT_SPAN = 0x00F067AA0BA902B7
CLIENT_PARENT = f"00-{CLIENT_TRACE:032x}-{CLIENT_SPAN:016x}-01"
CHAT = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def recorders() -> Iterator[tuple[list[HeaderRecorder], ServerThread]]:
    backends = [HeaderRecorder(status=503), HeaderRecorder()]
    server = ServerThread(backends).start()
    yield backends, server
    server.stop()


def entries(server: ServerThread) -> list[dict[str, Any]]:
    return [
        {"id": f"b{i}", "url": url, "engine": "openai", "models": [MODEL]}
        for i, url in enumerate(server.urls)
    ]


class Spans(InMemorySpanExporter):
    """Keeps the spans; a test can wait for the server spans of its requests, which end
    after the response has gone out."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._changed:
            result = super().export(spans)
            self._changed.notify_all()
        return result

    def roots(self, n: int) -> list[ReadableSpan]:
        """The first `n` server spans, once they have ended."""

        def found() -> list[ReadableSpan]:
            return [s for s in self.get_finished_spans() if s.kind is SpanKind.SERVER]

        with self._changed:
            assert self._changed.wait_for(lambda: len(found()) >= n, timeout=10)
        return found()


def in_memory(gw: GatewayHandle, **settings: Any) -> Spans:
    """Trace the gateway's requests into memory (the tracer is read per request)."""
    exporter = Spans()
    config = TracingSettings(enabled=True, **settings)
    gw.deps.tracing = OtelTracing.from_settings(config, exporter)
    return exporter


def post(gw: GatewayHandle, body: bytes = CHAT, **headers: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json", **headers},
        timeout=10,
    )


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def sent_parent(headers: dict[bytes, bytes]) -> TraceParent:
    parent = TraceParent.parse(headers.get(b"traceparent"))
    assert parent is not None, headers
    return parent


def test_client_trace_continues_through_admission_routing_and_each_attempt(recorders, gateway):
    backends, server = recorders
    failing, answering = backends
    gw = gateway(entries(server), routing={"policy": "round_robin"})
    exporter = in_memory(gw)
    r = post(gw, traceparent=CLIENT_PARENT, tracestate="vendor=abc")
    assert r.status_code == 200
    assert r.headers["x-gateway-backend"] == "b1"  # b0 answered 503 first: failed over
    (root,) = exporter.roots(1)
    spans = exporter.get_finished_spans()
    assert root.context.trace_id == CLIENT_TRACE
    assert root.parent is not None
    assert root.parent.span_id == CLIENT_SPAN
    assert root.parent.is_remote
    assert root.name == f"chat {MODEL}"
    assert root.attributes[sc.GEN_AI_REQUEST_MODEL] == MODEL
    assert root.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert root.attributes[sc.GEN_AI_RESPONSE_ID] == "chatcmpl-raw"
    assert root.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert root.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 1
    assert root.attributes[sc.HTTP_RESPONSE_STATUS_CODE] == 200
    assert root.attributes[sc.ATTEMPTS] == 2
    assert root.attributes[sc.BACKEND] == "b1"
    (admission,) = by_name(spans, "gateway.admission")
    (route,) = by_name(spans, "gateway.route")
    assert route.attributes[sc.BACKEND] == "b0"
    assert route.attributes[sc.POLICY] == "round_robin"
    assert route.attributes[sc.CANDIDATES] == 2
    attempts = sorted(
        (s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.attributes[sc.ATTEMPT]
    )
    assert [a.attributes[sc.BACKEND] for a in attempts] == ["b0", "b1"]
    assert [a.attributes[sc.ATTEMPT_RESULT] for a in attempts] == ["status_503", "ok"]
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[0].attributes[sc.HTTP_RESPONSE_STATUS_CODE] == 503
    assert all(a.attributes[sc.GEN_AI_PROVIDER_NAME] == "openai" for a in attempts)
    assert all(a.attributes[sc.SERVER_ADDRESS] == "127.0.0.1" for a in attempts)
    for child in (admission, route, *attempts):
        assert child.context.trace_id == CLIENT_TRACE
        assert child.parent is not None
        assert child.parent.span_id == root.context.span_id
    # Each backend was told its own attempt's span as the parent, in the client's trace.
    for recorder, attempt in zip((failing, answering), attempts, strict=True):
        (headers,) = recorder.headers
        parent = sent_parent(headers)
        assert parent.trace_id == CLIENT_TRACE
        assert parent.span_id == attempt.context.span_id
        assert parent.flags == 1
        assert headers[b"tracestate"] == b"vendor=abc"


def test_without_a_client_trace_a_new_one_starts_and_reaches_the_backend(recorders, gateway):
    backends, server = recorders
    backends[0].status = 200
    gw = gateway(entries(server)[:1])
    exporter = in_memory(gw)
    for bad in ("", "01-" + CLIENT_PARENT[3:], CLIENT_PARENT.upper(), f"00-{0:032x}-{1:016x}-01"):
        assert post(gw, traceparent=bad).status_code == 200
    roots = exporter.roots(4)
    assert len(roots) == 4
    assert all(s.parent is None for s in roots)
    assert len({s.context.trace_id for s in roots}) == 4
    received = [sent_parent(h).trace_id for h in backends[0].headers]
    assert received == [s.context.trace_id for s in roots]


def test_limits_refusal_ends_the_admission_span_as_refused(recorders, gateway):
    backends, server = recorders
    backends[0].status = 200
    tiers = {"standard": {"limits": {"requests_per_min": 1}}}
    gw = gateway(entries(server)[:1], admission={"tiers": tiers})
    exporter = in_memory(gw)
    assert post(gw).status_code == 200
    assert post(gw).status_code == 429
    roots = exporter.roots(2)
    admissions = by_name(exporter.get_finished_spans(), "gateway.admission")
    assert [s.attributes[sc.ADMITTED] for s in admissions] == [True, False]
    assert admissions[1].attributes[sc.ADMISSION_REASON] == "requests"
    assert admissions[1].attributes[sc.TIER] == "standard"
    assert [s.attributes[sc.HTTP_RESPONSE_STATUS_CODE] for s in roots] == [200, 429]
    assert len(backends[0].headers) == 1


def test_sampled_out_traces_record_nothing_but_still_propagate(recorders, gateway):
    backends, server = recorders
    backends[0].status = 200
    gw = gateway(entries(server)[:1])
    exporter = in_memory(gw, sample_ratio=0.0)
    assert post(gw).status_code == 200
    # A client that sampled its trace is followed whatever the ratio.
    assert post(gw, traceparent=CLIENT_PARENT).status_code == 200
    (root,) = exporter.roots(1)
    assert root.context.trace_id == CLIENT_TRACE
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {CLIENT_TRACE}
    unsampled, sampled = (sent_parent(h) for h in backends[0].headers)
    assert unsampled.flags & 1 == 0  # not sampled (bit 2 may say the id is random)
    assert unsampled.trace_id != CLIENT_TRACE
    assert sampled.flags & 1 == 1
    assert sampled.trace_id == CLIENT_TRACE


def test_tracing_off_passes_the_client_traceparent_on_as_sent(recorders, gateway):
    backends, server = recorders
    backends[0].status = 200
    gw = gateway(entries(server)[:1])
    assert not gw.deps.tracing.enabled
    assert post(gw, traceparent=CLIENT_PARENT, tracestate="k=v").status_code == 200
    assert post(gw).status_code == 200
    assert post(gw, traceparent="00-zz").status_code == 200
    passed, plain, invalid = backends[0].headers
    assert passed[b"traceparent"] == CLIENT_PARENT.encode()
    assert passed[b"tracestate"] == b"k=v"
    assert b"traceparent" not in plain
    assert b"traceparent" not in invalid


def test_a_stream_span_carries_the_usage_the_engine_reported(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    exporter = in_memory(gw)
    body = {
        "model": fleet.backends[0].config.model,
        "messages": [{"role": "user", "content": "tell me a story " * 40}],
        "max_tokens": 5,
        "stream": True,
    }
    r = post(gw, orjson.dumps(body), traceparent=CLIENT_PARENT)
    assert r.status_code == 200
    (root,) = exporter.roots(1)
    assert root.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    assert root.attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] == 5
    assert root.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert root.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] > 40
    assert root.attributes[sc.GEN_AI_PROVIDER_NAME] == "vllm"
    assert root.attributes[sc.GEN_AI_RESPONSE_ID].startswith("chatcmpl")


def test_spans_go_to_an_otlp_collector_over_http(recorders, gateway):
    backends, server = recorders
    backends[0].status = 200
    collector = Collector()
    otlp = ServerThread([collector]).start()
    try:
        tracing = {
            "enabled": True,
            "otlp_endpoint": otlp.urls[0] + "/v1/traces",
            "service_name": "gw-test",
        }
        gw = gateway(entries(server)[:1], tracing=tracing)
        assert gw.deps.tracing.enabled
        assert post(gw, traceparent=CLIENT_PARENT).status_code == 200
        assert gw.call(_flush(gw))
        assert collector.received.wait(10)
    finally:
        otlp.stop()
    spans = collector.spans()
    names = sorted(span.name for _, _, span in spans)
    assert names == sorted([f"chat {MODEL}", "gateway.admission", "gateway.route", f"chat {MODEL}"])
    resource, scope_spans, _ = spans[0]
    service = {a.key: a.value.string_value for a in resource.attributes}[sc.SERVICE_NAME]
    assert service == "gw-test"
    assert scope_spans.schema_url == sc.SCHEMA_URL
    assert {span.trace_id for _, _, span in spans} == {CLIENT_TRACE.to_bytes(16, "big")}
    client_spans = [span for _, _, span in spans if span.kind == span.SPAN_KIND_CLIENT]
    (attempt,) = client_spans
    assert sent_parent(backends[0].headers[0]).span_id == int.from_bytes(attempt.span_id, "big")


async def _flush(gw: GatewayHandle) -> bool:
    import asyncio

    return await asyncio.to_thread(gw.deps.tracing.flush)
