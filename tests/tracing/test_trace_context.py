"""W3C trace context parsing, tracing off at no per-request cost, and the SDK check."""

from __future__ import annotations

import asyncio
import sys

import pytest

from gateway.settings import ConfigError, TracingSettings, settings_from_mapping
from gateway.tracing import PassThrough, RequestTrace, TraceParent, Tracing, build_tracing
from gateway.tracing.otel import OtelTracing

VALID = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BACKEND = {"id": "b", "url": "http://127.0.0.1:9", "models": ["m"]}


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "path": "/v1/chat/completions", "headers": list(headers)}


def test_a_valid_traceparent_is_parsed_and_written_back_the_same() -> None:
    parent = TraceParent.parse(VALID)
    assert parent == TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)
    assert parent.header() == VALID


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"01" + VALID[2:],  # another version
        b"ff" + VALID[2:],
        VALID.upper(),  # hex must be lower case
        VALID + b"-extra",
        VALID[:-1],
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",  # all-zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01",  # all-zero parent id
        b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        b"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    ],
)
def test_a_malformed_traceparent_is_ignored(value: bytes) -> None:
    assert TraceParent.parse(value) is None


def test_tracing_off_makes_nothing_per_request_without_a_trace_context() -> None:
    tracing = build_tracing(TracingSettings())
    assert type(tracing) is Tracing
    assert not tracing.enabled
    first = tracing.begin(scope((b"x-request-id", b"a")))
    second = tracing.begin(scope((b"traceparent", b"00-bad")))
    assert first is second  # one shared object, chosen at startup
    assert type(first) is RequestTrace
    assert first.attempt(None, 1) is first  # type: ignore[arg-type]
    assert first.headers == ()


def test_tracing_off_passes_a_valid_client_context_on_unchanged() -> None:
    tracing = Tracing()
    trace = tracing.begin(scope((b"traceparent", VALID), (b"tracestate", b"k=v")))
    assert isinstance(trace, PassThrough)
    attempt = trace.attempt(None, 1)  # type: ignore[arg-type]
    assert list(attempt.headers) == [(b"traceparent", VALID), (b"tracestate", b"k=v")]


def test_tracing_enabled_without_the_sdk_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigError, match=r"tracing: .*prefix-gateway\[otel\]"):
        settings_from_mapping({"backends": [BACKEND], "tracing": {"enabled": True}})
    with pytest.raises(ConfigError, match="OpenTelemetry SDK"):
        build_tracing(TracingSettings.model_construct(enabled=True))


def test_tracing_settings_are_checked() -> None:
    settings = settings_from_mapping(
        {
            "backends": [BACKEND],
            "tracing": {
                "enabled": True,
                "otlp_endpoint": "http://127.0.0.1:4318/v1/traces",
                "sample_ratio": 0.25,
            },
        }
    )
    tracing = build_tracing(settings.tracing)
    assert isinstance(tracing, OtelTracing)
    asyncio.run(tracing.close())
    for bad in ({"sample_ratio": 1.5}, {"otlp_endpoint": "not a url"}, {"nope": 1}):
        with pytest.raises(ConfigError, match="tracing"):
            settings_from_mapping({"backends": [BACKEND], "tracing": bad})
