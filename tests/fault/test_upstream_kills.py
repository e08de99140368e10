"""Backends killed over loopback: before the first byte (served elsewhere), mid-stream (in-band)."""

from __future__ import annotations

import time

import pytest

from tests.integration.upstream.backends import die_before_answering, event, good
from tests.integration.upstream.gateway import backend, loop_gateway, raw_servers, sse_events
from tests.integration.upstream.rawserver import Conn

__all__ = ["raw_servers"]  # the fixture, imported to be used here

ORDERED = {"policy": "round_robin"}  # the first request tries the backends in config order


@pytest.mark.parametrize("stream", [False, True])
async def test_backend_killed_before_the_first_byte_is_served_elsewhere(raw_servers, stream):
    dead, ok = await raw_servers(die_before_answering, good)
    async with loop_gateway([backend(dead, "dead"), backend(ok, "ok")], routing=ORDERED) as gw:
        r = await gw.chat(stream=stream)
        attempts = await gw.metric_lines("gateway_upstream_attempts_total{")
        breaker = gw.deps.fleet.backends[0].state.breaker
        counts = breaker.window_counts(time.monotonic())
    assert r.status_code == 200
    assert r.headers["x-gateway-backend"] == "ok"
    if stream:
        assert sse_events(r.content)[-1] == "[DONE]"
    assert len(dead.requests) == 1
    assert sorted(attempts) == [
        'gateway_upstream_attempts_total{backend="dead",outcome="unavailable"} 1.0',
        'gateway_upstream_attempts_total{backend="ok",outcome="ok"} 1.0',
    ]
    assert counts == (1, 1)  # the dead backend's breaker counted one failed attempt


async def test_backend_killed_mid_stream_ends_in_band_and_its_breaker_counts_it(raw_servers):
    async def dies_mid_stream(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.stream_head()
            await conn.chunk(event("one"))
            await conn.chunk(event("two"))
            conn.abort()
            return

    (dying,) = await raw_servers(dies_mid_stream)
    breaker = {"consecutive_failures": 2, "cooldown_s": 60}
    async with loop_gateway([backend(dying, "dying")], breaker=breaker) as gw:
        r = await gw.chat(stream=True)
        state = gw.deps.fleet.backends[0].state.breaker
        after_one = state.window_counts(time.monotonic())
        second = await gw.chat(stream=True)
        third = await gw.chat(stream=True)
        circuit = await gw.metric_lines('gateway_backend_circuit_state{backend="dying"')
    assert r.status_code == 200
    chunks = sse_events(r.content)
    assert [c["choices"][0]["delta"]["content"] for c in chunks[:2]] == ["one", "two"]
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["error"]["type"] == "server_error"
    assert "dying" in chunks[-2]["error"]["message"]
    assert after_one == (1, 1)  # recorded when the stream ended, as a failure
    assert second.status_code == 200  # the second broken stream opens the circuit
    assert third.status_code == 503
    assert 'gateway_backend_circuit_state{backend="dying",state="open"} 1.0' in circuit
    assert len(dying.requests) == 2
