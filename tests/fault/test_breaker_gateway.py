"""The per-backend circuit breaker through a gateway over loopback: open, refuse, probe, close."""

from __future__ import annotations

import asyncio
import time

from gateway.fleet.breaker import Admission
from tests.integration.upstream.backends import STREAM, answer, good, hang, wants_stream
from tests.integration.upstream.gateway import (
    backend,
    chat,
    error_of,
    loop_gateway,
    raw_servers,
)
from tests.integration.upstream.rawserver import Conn

__all__ = ["raw_servers"]  # the fixture, imported to be used here

ORDERED = {"policy": "round_robin"}
FAILING = b'{"error": {"message": "engine dead", "type": "InternalServerError", "code": 500}}'


async def failing(conn: Conn) -> None:
    """Every request gets a 500."""
    while await conn.request() is not None:
        await conn.respond(500, FAILING, b"content-type: application/json\r\n")


async def test_consecutive_failures_open_the_circuit_and_traffic_leaves(raw_servers):
    bad, ok = await raw_servers(failing, good)
    breaker = {"consecutive_failures": 2, "cooldown_s": 60}
    async with loop_gateway(
        [backend(bad, "bad"), backend(ok, "ok")], breaker=breaker, routing=ORDERED
    ) as gw:
        statuses = [(await gw.chat()).status_code for _ in range(8)]
        ready = await gw.client.get("/readyz")
        circuit = await gw.metric_lines("gateway_backend_circuit_")
    assert statuses == [200] * 8  # each failure was retried on "ok"
    assert len(bad.requests) == 2  # then its circuit opened and it got no more
    assert ready.status_code == 200
    assert ready.json()["usable_backends"] == 1
    assert 'gateway_backend_circuit_state{backend="bad",state="open"} 1.0' in circuit
    assert 'gateway_backend_circuit_state{backend="ok",state="closed"} 1.0' in circuit
    assert 'gateway_backend_circuit_opens_total{backend="bad"} 1.0' in circuit


async def test_open_backends_leave_the_profile_ranking(raw_servers):
    bad, ok = await raw_servers(failing, good)
    breaker = {"consecutive_failures": 1, "cooldown_s": 60}
    async with loop_gateway(
        [backend(bad, "bad"), backend(ok, "ok")],
        breaker=breaker,
        routing={"explain_header": True},
    ) as gw:
        circuit = gw.deps.fleet.backends[0].state.breaker
        circuit.record(Admission.NORMAL, False, time.monotonic())  # as a failed attempt would
        routes = []
        for _ in range(5):
            r = await gw.client.post(
                "/v1/chat/completions", json=chat(), headers={"x-gateway-explain": "1"}
            )
            assert r.status_code == 200
            routes.append(r.headers["x-gateway-route"])
    assert not bad.requests
    assert all("ok:" in route and "bad" not in route for route in routes)


async def test_every_circuit_open_means_503_with_retry_after_and_not_ready(raw_servers):
    first, second = await raw_servers(failing, failing)
    breaker = {"consecutive_failures": 1, "cooldown_s": 30}
    async with loop_gateway(
        [backend(first, "a"), backend(second, "b")], breaker=breaker, routing=ORDERED
    ) as gw:
        failed = await gw.chat()
        refused = await gw.chat()
        ready = await gw.client.get("/readyz")
    assert failed.status_code == 502  # both tried, both failed: each circuit opened
    assert refused.status_code == 503
    error = error_of(refused.content)
    assert error["code"] == "no_backend_available"
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert ready.status_code == 503
    assert ready.json()["usable_backends"] == 0
    assert len(first.requests) == len(second.requests) == 1


async def test_client_errors_do_not_open_the_circuit(raw_servers):
    message = b'{"error": {"message": "bad request", "type": "BadRequestError", "code": 400}}'

    async def rejects(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.respond(400, message)

    (server,) = await raw_servers(rejects)
    async with loop_gateway([backend(server, "b")], breaker={"consecutive_failures": 2}) as gw:
        statuses = [(await gw.chat()).status_code for _ in range(5)]
        circuit = await gw.metric_lines('gateway_backend_circuit_state{backend="b",state="closed"')
    assert statuses == [400] * 5
    assert circuit == ['gateway_backend_circuit_state{backend="b",state="closed"} 1.0']


async def test_a_hanging_backend_opens_its_circuit(raw_servers):
    hung, ok = await raw_servers(hang, good)
    async with loop_gateway(
        [backend(hung, "hung"), backend(ok, "ok")],
        upstream={"response_timeout_s": 0.2},
        breaker={"consecutive_failures": 1, "cooldown_s": 60},
        routing=ORDERED,
    ) as gw:
        statuses = [(await gw.chat()).status_code for _ in range(4)]
    assert statuses == [200] * 4
    assert len(hung.requests) == 1


async def test_after_the_cooldown_one_probe_is_let_through_and_closes_the_circuit(raw_servers):
    cooldown = 0.2
    failures = 1
    probe_arrived = asyncio.Event()
    release_probe = asyncio.Event()

    async def recovers(conn: Conn) -> None:
        nonlocal failures
        while (request := await conn.request()) is not None:
            if failures:
                failures -= 1
                await conn.respond(500, FAILING)
                continue
            if not probe_arrived.is_set():
                probe_arrived.set()
                await release_probe.wait()
            await answer(conn, request)

    (server,) = await raw_servers(recovers)
    breaker = {"consecutive_failures": 1, "cooldown_s": cooldown}
    async with loop_gateway([backend(server, "r")], breaker=breaker) as gw:
        assert (await gw.chat()).status_code == 502  # the failure opens the circuit
        assert (await gw.chat()).status_code == 503  # open: refused without trying
        # The behaviour under test is time-based: wait out the configured cooldown.
        await asyncio.sleep(cooldown * 2)
        assert (await gw.client.get("/readyz")).status_code == 200  # half-open counts as usable
        probe = asyncio.ensure_future(gw.chat())
        await probe_arrived.wait()
        during = await gw.chat()  # only one probe at a time
        release_probe.set()
        probed = await probe
        after = [(await gw.chat()).status_code for _ in range(3)]
        circuit = await gw.metric_lines('gateway_backend_circuit_state{backend="r",state="closed"')
    assert during.status_code == 503
    assert probed.status_code == 200
    assert after == [200] * 3
    assert circuit == ['gateway_backend_circuit_state{backend="r",state="closed"} 1.0']
    assert len(server.requests) == 5  # the failure, the probe and three after it


async def test_a_stream_answered_between_two_failures_keeps_the_circuit_closed(raw_servers):
    # A 500 comes back at once while a stream takes seconds: the stream's good head between
    # two quick failures means they are not consecutive, though it ends after both.
    release = asyncio.Event()

    async def mixed(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            if not wants_stream(request):
                await conn.respond(500, FAILING, b"content-type: application/json\r\n")
                continue
            await conn.stream_head()
            await conn.chunk(STREAM[0])
            await release.wait()
            for part in STREAM[1:]:
                await conn.chunk(part)
            await conn.chunk(b"")

    (server,) = await raw_servers(mixed)
    breaker = {"consecutive_failures": 2, "cooldown_s": 60}
    async with loop_gateway([backend(server, "mixed")], breaker=breaker) as gw:
        assert (await gw.chat()).status_code == 502
        async with gw.client.stream("POST", "/v1/chat/completions", json=chat(True)) as stream:
            parts = stream.aiter_raw()
            first = await anext(parts)
            assert b'"o"' in first  # the gateway has the head and is relaying
            assert (await gw.chat()).status_code == 502
            circuit = await gw.metric_lines("gateway_backend_circuit_state")
            release.set()
            rest = b"".join([part async for part in parts])
    assert 'gateway_backend_circuit_state{backend="mixed",state="closed"} 1.0' in circuit
    assert rest.endswith(b"data: [DONE]\n\n")
