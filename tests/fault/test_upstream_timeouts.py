"""Hanging backends over loopback: first-byte timeouts and budget (504), idle streams, failover."""

from __future__ import annotations

import asyncio

from gateway.settings import UpstreamSettings
from tests.integration.upstream.backends import event, good, hang
from tests.integration.upstream.gateway import (
    backend,
    error_of,
    loop_gateway,
    raw_servers,
    sse_events,
)
from tests.integration.upstream.rawserver import Conn

__all__ = ["raw_servers"]  # the fixture, imported to be used here

ORDERED = {"policy": "round_robin"}  # the first request tries the backends in config order


async def test_defaults_are_sane():
    settings = UpstreamSettings()
    assert settings.first_byte_timeout_s <= 60  # a stream's first event
    assert settings.response_timeout_s <= settings.first_byte_budget_s <= 300  # a whole answer
    # Below the 5 s after which uvicorn-based engines close idle keep-alive connections.
    assert settings.keepalive_expiry_s < 5


async def test_hanging_backend_gives_504_upstream_timeout(raw_servers):
    (hung,) = await raw_servers(hang)
    upstream = {"first_byte_timeout_s": 0.2, "response_timeout_s": 0.3, "max_attempts": 1}
    async with loop_gateway([backend(hung, "hung")], upstream=upstream) as gw:
        for stream, configured in ((False, "0.3 s"), (True, "0.2 s")):
            r = await gw.chat(stream=stream)
            assert r.status_code == 504
            error = error_of(r.content)
            assert error["code"] == "upstream_timeout"
            assert error["type"] == "timeout_error"
            assert configured in error["message"]
            assert r.headers["x-gateway-backend"] == "hung"
        attempts = await gw.metric_lines("gateway_upstream_attempts_total{")
    assert attempts == ['gateway_upstream_attempts_total{backend="hung",outcome="timeout"} 2.0']
    await hung.wait_finished(2)  # both requests' connections were closed by the gateway


async def test_hanging_backend_is_passed_over_for_the_next(raw_servers):
    hung, ok = await raw_servers(hang, good)
    upstream = {"first_byte_timeout_s": 0.2, "response_timeout_s": 0.2}
    async with loop_gateway(
        [backend(hung, "hung"), backend(ok, "ok")], upstream=upstream, routing=ORDERED
    ) as gw:
        for stream in (False, True):
            r = await gw.chat(stream=stream)
            assert r.status_code == 200
            assert r.headers["x-gateway-backend"] == "ok"
    assert len(hung.requests) == 1  # round robin started the second request at "ok"


async def test_the_budget_caps_all_attempts_together(raw_servers):
    first, second = await raw_servers(hang, hang)
    upstream = {"response_timeout_s": 30, "first_byte_budget_s": 0.3}
    async with loop_gateway(
        [backend(first, "a"), backend(second, "b")], upstream=upstream, routing=ORDERED
    ) as gw:
        r = await gw.chat()
    assert r.status_code == 504
    error = error_of(r.content)
    assert error["code"] == "upstream_timeout"
    assert "0.3 s" in error["message"]
    assert second.connections == 0  # the first attempt used the whole budget


async def test_head_without_a_first_event_is_a_timeout_before_the_first_byte(raw_servers):
    async def head_only(conn: Conn) -> None:
        await conn.request()
        await conn.stream_head()
        await conn.wait_closed_by_client()

    (silent,) = await raw_servers(head_only)
    upstream = {"first_byte_timeout_s": 0.2, "max_attempts": 1}
    async with loop_gateway([backend(silent, "silent")], upstream=upstream) as gw:
        r = await gw.chat(stream=True)
    assert r.status_code == 504  # nothing reached the client, so a real status
    assert error_of(r.content)["code"] == "upstream_timeout"


async def test_idle_stream_ends_with_an_in_band_timeout_and_done(raw_servers):
    async def stalls(conn: Conn) -> None:
        await conn.request()
        await conn.stream_head()
        await conn.chunk(event("first"))
        await conn.wait_closed_by_client()

    (stalling,) = await raw_servers(stalls)
    upstream = {"read_timeout_s": 0.2}
    async with loop_gateway([backend(stalling, "stall")], upstream=upstream) as gw:
        r = await gw.chat(stream=True)
        assert r.status_code == 200
        chunks = sse_events(r.content)
        assert chunks[0]["choices"][0]["delta"]["content"] == "first"
        assert chunks[-1] == "[DONE]"
        error = chunks[-2]["error"]
        assert error["code"] == "upstream_timeout"
        assert "0.2 s" in error["message"]
        attempts = await gw.metric_lines("gateway_upstream_attempts_total{")
        errors = await gw.metric_lines("gateway_stream_errors_total{")
    assert attempts == ['gateway_upstream_attempts_total{backend="stall",outcome="stalled"} 1.0']
    assert errors == ['gateway_stream_errors_total{backend="stall"} 1.0']


async def test_timeouts_are_per_request_values(raw_servers):
    """The forwarder takes the limits per request (tiers will pass their own)."""
    from gateway.proxy.forward import AttemptLimits

    (hung,) = await raw_servers(hang)
    upstream = {"response_timeout_s": 30, "max_attempts": 1}
    async with loop_gateway([backend(hung, "hung")], upstream=upstream) as gw:
        forwarder = gw.deps.forwarder
        original = forwarder.forward
        limits = AttemptLimits(
            first_byte_timeout_s=1, first_byte_budget_s=1, read_timeout_s=1, response_timeout_s=0.1
        )

        async def with_limits(*args, **kwargs):
            kwargs["limits"] = limits
            return await original(*args, **kwargs)

        forwarder.forward = with_limits  # type: ignore[method-assign]
        r = await asyncio.wait_for(gw.chat(), timeout=20)
    assert r.status_code == 504
    assert "0.1 s" in error_of(r.content)["message"]
