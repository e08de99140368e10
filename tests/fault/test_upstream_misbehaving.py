"""Backends that answer wrongly over loopback: odd statuses, Retry-After, huge bodies, SSE."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.upstream.backends import ANSWER, DONE, answer, event, good
from tests.integration.upstream.gateway import (
    backend,
    chat,
    error_of,
    loop_gateway,
    raw_servers,
    sse_events,
)
from tests.integration.upstream.rawserver import Conn

__all__ = ["raw_servers"]  # the fixture, imported to be used here

ONE_ATTEMPT = {"max_attempts": 1}


def answering(status_line: bytes, headers: bytes = b"", body: bytes = b""):
    """A backend answering its first request with exactly these bytes, then normally."""

    async def handler(conn: Conn) -> None:
        first = True
        while (request := await conn.request()) is not None:
            if first:
                first = False
                await conn.write(b"HTTP/1.1 " + status_line + b"\r\n" + headers + b"\r\n" + body)
            else:
                await answer(conn, request)

    return handler


@pytest.mark.parametrize(
    ("status_line", "headers", "body"),
    [
        # A 204 carrying a body: relayed as is it would desync the client's keep-alive.
        (b"204 No Content", b"", b""),
        (b"302 Found", b"location: /elsewhere\r\ncontent-length: 0\r\n", b""),
        (b"304 Not Modified", b"", b""),
        (b"201 Created", b"content-length: 2\r\n", b"{}"),
        (b"600 Beyond", b"content-length: 2\r\n", b"{}"),
        (b"999 Nonsense", b"content-length: 2\r\n", b"{}"),
    ],
)
async def test_statuses_a_client_cannot_take_become_502(raw_servers, status_line, headers, body):
    (odd,) = await raw_servers(answering(status_line, headers, body))
    async with loop_gateway([backend(odd, "odd")], upstream=ONE_ATTEMPT) as gw:
        r = await gw.chat()
        assert r.status_code == 502
        error = error_of(r.content)
        assert status_line.split(b" ")[0].decode() in error["message"]
        # The same client connection goes on working: nothing was left on it.
        again = await gw.chat()
        assert again.status_code == 200
        assert again.content == ANSWER


async def test_odd_status_is_retried_on_the_next_backend(raw_servers):
    odd, ok = await raw_servers(answering(b"204 No Content"), good)
    async with loop_gateway(
        [backend(odd, "odd"), backend(ok, "ok")], routing={"policy": "round_robin"}
    ) as gw:
        r = await gw.chat()
    assert r.status_code == 200
    assert r.headers["x-gateway-backend"] == "ok"


@pytest.mark.parametrize("status", [429, 503])
async def test_the_backends_retry_after_is_passed_through(raw_servers, status):
    line = b"%d Busy" % status
    busy_headers = b"retry-after: 17\r\ncontent-length: 27\r\n"
    (busy,) = await raw_servers(answering(line, busy_headers, b'{"error": "come back later"}'[:27]))
    async with loop_gateway([backend(busy, "busy")], upstream=ONE_ATTEMPT) as gw:
        r = await gw.chat()
    assert r.status_code == status
    assert r.headers["retry-after"] == "17"
    assert r.headers["retry-after-ms"] == "17000"
    error_of(r.content)


async def test_without_retry_after_the_gateway_says_one_second(raw_servers):
    (busy,) = await raw_servers(answering(b"429 Busy", b"content-length: 0\r\n"))
    async with loop_gateway([backend(busy, "busy")], upstream=ONE_ATTEMPT) as gw:
        r = await gw.chat()
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_cap_is_a_502_and_the_connection_is_dropped(raw_servers, framing):
    cap = 64 * 1024
    piece = b"x" * 16 * 1024

    async def huge(conn: Conn) -> None:
        await conn.request()
        if framing == "chunked":
            await conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(8):
                await conn.chunk(piece)
            await conn.wait_closed_by_client()
        else:
            await conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (cap * 1000))
            await conn.write(piece)
            await conn.wait_closed_by_client()

    (big,) = await raw_servers(huge)
    upstream = {"max_response_bytes": cap}
    async with loop_gateway([backend(big, "big")], upstream=upstream) as gw:
        r = await gw.chat()
        assert r.status_code == 502
        assert str(cap) in error_of(r.content)["message"]
        await big.wait_finished(1)  # the gateway hung up on it
        attempts = await gw.metric_lines("gateway_upstream_attempts_total{")
    # Not retried: another backend would be asked for the same answer.
    assert attempts == ['gateway_upstream_attempts_total{backend="big",outcome="too_large"} 1.0']


async def test_sse_without_event_boundaries_is_relayed_as_it_comes(raw_servers):
    bound = 4096
    piece = b"y" * 1000
    client_has_bytes = asyncio.Event()
    sent: list[bytes] = []

    async def endless_event(conn: Conn) -> None:
        await conn.request()
        await conn.stream_head()
        first = b"data: " + piece
        sent.append(first)
        await conn.chunk(first)
        for _ in range(3 * bound // len(piece)):
            sent.append(piece)
            await conn.chunk(piece)
        # Past the bound the gateway must relay, not hold: the event ends only once the
        # client has bytes (were they held, this would wait until the test times out).
        await client_has_bytes.wait()
        for tail in (b"\n\n", DONE):
            sent.append(tail)
            await conn.chunk(tail)
        await conn.chunk(b"")

    (streamer,) = await raw_servers(endless_event)
    upstream = {"max_pending_event_bytes": bound}
    async with loop_gateway([backend(streamer, "s")], upstream=upstream) as gw:
        received = b""
        body = chat(stream=True)
        async with gw.client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            async for data in r.aiter_raw():
                received += data
                client_has_bytes.set()
    assert received == b"".join(sent)


async def test_normal_streams_still_have_engine_errors_rewritten(raw_servers):
    vllm_error = b'data: {"error": {"message": "boom", "type": "InternalServerError", "code": 500}}'

    async def errs(conn: Conn) -> None:
        await conn.request()
        await conn.stream_head()
        # An event split across chunks, then the engine's error event, then [DONE].
        whole = event("a")
        await conn.chunk(whole[:10])
        await conn.chunk(whole[10:] + vllm_error[:20])
        await conn.chunk(vllm_error[20:] + b"\n\n" + DONE)
        await conn.chunk(b"")

    (server,) = await raw_servers(errs)
    async with loop_gateway([backend(server, "e")]) as gw:
        r = await gw.chat(stream=True)
        attempts = await gw.metric_lines("gateway_upstream_attempts_total{")
    chunks = sse_events(r.content)
    assert chunks[0]["choices"][0]["delta"]["content"] == "a"
    assert chunks[1]["error"] == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert chunks[2:] == ["[DONE]"]
    assert attempts == ['gateway_upstream_attempts_total{backend="e",outcome="stream_error"} 1.0']


async def test_client_authorization_is_never_forwarded(raw_servers):
    (ok,) = await raw_servers(good)
    async with loop_gateway([backend(ok, "ok", api_key="backend-secret")]) as gw:
        r = await gw.client.post(
            "/v1/chat/completions",
            json=chat(),
            headers={"authorization": "Bearer client-secret"},
        )
    assert r.status_code == 200
    assert ok.requests[0].header(b"authorization") == b"Bearer backend-secret"


async def test_backends_closing_after_every_response_lose_no_request(raw_servers):
    async def one_per_connection(conn: Conn) -> None:
        request = await conn.request()
        if request is not None:
            await conn.respond(200, ANSWER, b"content-type: application/json\r\n")

    servers = await raw_servers(one_per_connection, one_per_connection)
    async with loop_gateway([backend(s, f"b{i}") for i, s in enumerate(servers)]) as gw:
        semaphore = asyncio.Semaphore(16)

        async def one() -> int:
            async with semaphore:
                return (await gw.chat()).status_code

        statuses = await asyncio.gather(*(one() for _ in range(200)))
    assert statuses == [200] * 200
    assert sum(s.connections for s in servers) >= 200


async def test_client_errors_pass_through_with_their_status(raw_servers):
    message = b'{"error": {"message": "bad", "type": "BadRequestError", "code": 400}}'
    headers = b"content-length: %d\r\n" % len(message)
    (server,) = await raw_servers(answering(b"400 Bad Request", headers, message))
    async with loop_gateway([backend(server, "b")]) as gw:
        r = await gw.chat()
    assert r.status_code == 400
    assert error_of(r.content)["message"] == "bad"


async def test_an_oversized_event_goes_out_after_a_held_final_chunk(raw_servers):
    final = (
        b'data: {"id": "c", "object": "chat.completion.chunk", "choices": '
        b'[{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
    )
    big = b"data: " + b"z" * 5000
    client_got = [asyncio.Event(), asyncio.Event()]

    async def finishes_then_floods(conn: Conn) -> None:
        await conn.request()
        await conn.stream_head()
        await conn.chunk(event("a") + final)
        await client_got[0].wait()  # "a" went out; the final chunk is held (usage not asked)
        await conn.chunk(big)
        await client_got[1].wait()
        for part in (b"\n\n" + DONE, b""):
            await conn.chunk(part)

    (server,) = await raw_servers(finishes_then_floods)
    upstream = {"max_pending_event_bytes": 4096}
    received = b""
    async with loop_gateway([backend(server, "f")], upstream=upstream) as gw:
        body = chat(stream=True)
        async with gw.client.stream("POST", "/v1/chat/completions", json=body) as r:
            async for data in r.aiter_raw():
                received += data
                client_got[0 if len(received) <= len(event("a")) else 1].set()
    assert received == event("a") + final + big + b"\n\n" + DONE
