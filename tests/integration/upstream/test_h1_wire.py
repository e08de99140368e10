"""H1Upstream against scripted servers on loopback: framing, keep-alive, failures, the pool."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.proxy.upstream import (
    UpstreamBroken,
    UpstreamStalled,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from tests.integration.upstream.rawserver import Conn

T = 5.0  # generous response-head timeout for requests that are expected to succeed


async def get(client, url: str) -> tuple[int, bytes]:
    response = await client.send("GET", url, None, [], timeout_s=T)
    try:
        return response.status, await response.read()
    finally:
        await response.aclose()


# ---- keep-alive and framing --------------------------------------------------------------------
async def test_sequential_requests_share_one_connection(raw_server, h1):
    server = await raw_server()
    client = h1()
    for i in range(20):
        status, body = await get(client, f"{server.url}/n/{i}")
        assert status == 200
        assert body == f"ok GET /n/{i} HTTP/1.1 ".encode()
    assert server.connections == 1


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_literal_host(raw_server, h1):
    server = await raw_server(host="::1")
    assert await get(h1(), server.url + "/six") == (200, b"ok GET /six HTTP/1.1 ")
    assert server.requests[0].header(b"host") == f"[::1]:{server.port}".encode()


async def test_host_name_is_resolved(raw_server, h1):
    server = await raw_server()
    client = h1()
    assert (await get(client, f"http://localhost:{server.port}/"))[0] == 200
    assert server.requests[0].header(b"host") == f"localhost:{server.port}".encode()


async def test_other_schemes_are_rejected(h1):
    with pytest.raises(ValueError, match="https://"):
        await h1().send("GET", "ftp://127.0.0.1:1/", None, [], timeout_s=T)


async def test_post_sends_body_host_and_headers(raw_server, h1):
    server = await raw_server()
    client = h1()
    response = await client.send(
        "POST",
        f"{server.url}/v1/chat?x=1",
        b'{"a": 1}',
        [(b"content-type", b"application/json"), (b"x-request-id", b"abc")],
        timeout_s=T,
    )
    assert await response.read() == b'ok POST /v1/chat?x=1 HTTP/1.1 {"a": 1}'
    await response.aclose()
    request = server.requests[0]
    assert request.header(b"host") == f"127.0.0.1:{server.port}".encode()
    assert request.header(b"content-length") == b"8"
    assert request.header(b"content-type") == b"application/json"
    assert request.header(b"x-request-id") == b"abc"
    assert request.header(b"connection") == b"keep-alive"


async def test_caller_cannot_override_framing_headers(raw_server, h1):
    server = await raw_server()
    client = h1()
    sneaky = [(b"Host", b"evil"), (b"content-length", b"999"), (b"Connection", b"close")]
    response = await client.send("POST", server.url, None, sneaky, timeout_s=T)
    await response.read()
    await response.aclose()
    request = server.requests[0]
    assert request.header(b"host") == f"127.0.0.1:{server.port}".encode()
    assert request.header(b"content-length") == b"0"
    assert request.header(b"connection") == b"keep-alive"
    assert request.head.lower().count(b"host:") == 1


async def test_line_breaks_in_header_values_are_refused(h1):
    with pytest.raises(ValueError, match="line break"):
        await h1().send("GET", "http://127.0.0.1:1/", None, [(b"x", b"a\r\nb: c")], timeout_s=T)


async def test_large_body_is_sent_whole(raw_server, h1):
    server = await raw_server()
    body = bytes(range(256)) * 4096  # 1 MiB, written after the head
    response = await h1().send("PUT", server.url + "/big", body, [], timeout_s=T)
    await response.read()
    await response.aclose()
    assert server.requests[0].body == body


async def test_chunked_body_is_dechunked(raw_server, h1):
    async def chunked(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for part in (b"hello ", b"chunked ", b"world"):
                await conn.write(b"%x\r\n%s\r\n" % (len(part), part))
            await conn.write(b"0\r\n\r\n")

    server = await raw_server(chunked)
    client = h1()
    for _ in range(3):
        assert await get(client, server.url) == (200, b"hello chunked world")
    assert server.connections == 1


async def test_error_statuses_carry_their_bodies(raw_server, h1):
    async def errors(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            status = int(request.line.split(b"/")[1].split(b" ")[0])
            await conn.respond(status, b'{"error": %d}' % status)

    server = await raw_server(errors)
    client = h1()
    for status in (400, 404, 429, 500, 503):
        response = await client.send("GET", f"{server.url}/{status}", None, [], timeout_s=T)
        assert response.status == status
        assert response.header(b"content-length") == str(len(await response.read())).encode()
        await response.aclose()
    assert server.connections == 1


async def test_response_without_framing_is_read_until_close(raw_server, h1):
    async def http10(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")

    server = await raw_server(http10)
    client = h1()
    assert await get(client, server.url) == (200, b"until the end")
    assert await get(client, server.url) == (200, b"until the end")
    assert server.connections == 2


async def test_connection_close_responses_are_not_reused(raw_server, h1):
    async def closing(conn: Conn) -> None:
        await conn.request()
        await conn.respond(200, b"bye", b"connection: close\r\n")

    server = await raw_server(closing)
    client = h1()
    for _ in range(3):
        assert await get(client, server.url) == (200, b"bye")
    assert server.connections == 3


async def test_bodiless_statuses_and_head(raw_server, h1):
    async def bodiless(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            if request.line.startswith(b"HEAD"):
                await conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            elif b"/204" in request.line:
                await conn.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                await conn.write(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n\r\n")

    server = await raw_server(bodiless)
    client = h1()
    for path in ("/204", "/304", "/204"):
        assert await get(client, server.url + path) == (int(path[1:]), b"")
    assert server.connections == 1
    response = await client.send("HEAD", server.url, None, [], timeout_s=T)
    assert (response.status, response.header(b"content-length")) == (200, b"5")
    assert await response.read() == b""
    await response.aclose()
    assert await get(client, server.url + "/204") == (204, b"")
    assert server.connections == 2  # a HEAD response's connection is not reused


async def test_interim_responses_are_skipped(raw_server, h1):
    async def interim(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.write(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\n"
            )
            await conn.respond(201, b"created")

    server = await raw_server(interim)
    client = h1()
    response = await client.send("POST", server.url, b"x", [], timeout_s=T)
    assert response.status == 201
    assert response.header(b"link") is None
    assert await response.read() == b"created"
    await response.aclose()
    assert await get(client, server.url) == (201, b"created")
    assert server.connections == 1


# ---- streaming ---------------------------------------------------------------------------------
async def test_stream_chunks_arrive_before_the_body_ends(raw_server, h1):
    go_on = asyncio.Event()

    async def stream(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await go_on.wait()
        await conn.write(b"4\r\nlast\r\n0\r\n\r\n")

    server = await raw_server(stream)
    response = await h1().send("POST", server.url, b"{}", [], timeout_s=T)
    chunks = response.chunks()
    assert await anext(chunks) == b"first"
    go_on.set()
    assert [chunk async for chunk in chunks] == [b"last"]
    await response.aclose()


async def test_closing_mid_body_closes_the_connection(raw_server, h1):
    async def endless(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await conn.wait_closed_by_client()

    server = await raw_server(endless)
    client = h1()
    response = await client.send("GET", server.url, None, [], timeout_s=T)
    assert await anext(response.chunks()) == b"abc"
    await response.aclose()
    await server.wait_finished(1)  # the server saw the client leave


async def test_slow_consumer_gets_every_byte(raw_server, h1):
    part = bytes(range(256)) * 256  # 64 KiB
    parts = 128

    async def big(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(part) * parts))
        for _ in range(parts):
            await conn.write(part)
        await conn.wait_closed_by_client()

    server = await raw_server(big)
    response = await h1(high_water_bytes=16 * 1024).send("GET", server.url, None, [], timeout_s=T)
    received = 0
    async for chunk in response.chunks():
        received += len(chunk)
    assert received == len(part) * parts
    await response.aclose()


# ---- failures ----------------------------------------------------------------------------------
async def test_connection_refused_is_unavailable(h1):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # bound, never listening: nothing accepts on this port
    with pytest.raises(UpstreamUnavailable):
        await h1().send("GET", f"http://127.0.0.1:{port}/", None, [], timeout_s=T)


async def test_silent_server_is_unavailable_after_the_timeout(raw_server, h1):
    async def silent(conn: Conn) -> None:
        await conn.request()
        await conn.wait_closed_by_client()

    server = await raw_server(silent)
    with pytest.raises(UpstreamUnavailable):
        await h1().send("POST", server.url, b"{}", [], timeout_s=0.2)
    await server.wait_finished(1)  # the client hung up on the silent server


async def test_server_dying_mid_body_is_broken(raw_server, h1):
    async def dies(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nten bytes.")

    server = await raw_server(dies)
    response = await h1().send("GET", server.url, None, [], timeout_s=T)
    assert response.status == 200
    with pytest.raises(UpstreamBroken):
        await response.read()
    await response.aclose()


async def test_stream_breaking_after_a_chunk_is_broken(raw_server, h1):
    async def dies(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")

    server = await raw_server(dies)
    response = await h1().send("GET", server.url, None, [], timeout_s=T)
    chunks = response.chunks()
    assert await anext(chunks) == b"hi"
    with pytest.raises(UpstreamBroken):
        await anext(chunks)
    await response.aclose()


async def test_stalled_stream_hits_the_read_timeout(raw_server, h1):
    async def stalls(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await conn.wait_closed_by_client()

    server = await raw_server(stalls)
    response = await h1(read_timeout_s=0.2).send("GET", server.url, None, [], timeout_s=T)
    chunks = response.chunks()
    assert await anext(chunks) == b"hi"
    with pytest.raises(UpstreamBroken):
        await anext(chunks)
    await response.aclose()
    await server.wait_finished(1)


async def test_garbage_instead_of_a_response_is_unavailable(raw_server, h1):
    async def garbage(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await conn.wait_closed_by_client()

    server = await raw_server(garbage)
    with pytest.raises(UpstreamUnavailable):
        await h1().send("GET", server.url, None, [], timeout_s=T)


# ---- stale keep-alive connections ----------------------------------------------------------------
async def test_server_closing_an_idle_connection_is_invisible(raw_server, h1):
    async def one_then_close(conn: Conn) -> None:
        request = await conn.request()
        assert request is not None
        await conn.respond(200, b"ok")

    server = await raw_server(one_then_close)
    client = h1()
    assert await get(client, server.url) == (200, b"ok")
    await server.wait_finished(1)
    assert await get(client, server.url) == (200, b"ok")
    assert server.connections == 2


async def test_request_racing_a_server_close_is_resent_once(raw_server, h1):
    async def answer_one_then_drop(conn: Conn) -> None:
        await conn.request()
        await conn.respond(200, b"first")
        await conn.request()  # read the next request, then close without a byte of answer

    async def handler(conn: Conn) -> None:
        if conn.index == 1:
            await answer_one_then_drop(conn)
        else:
            await conn.request()
            await conn.respond(200, b"resent")

    server = await raw_server(handler)
    client = h1()
    assert await get(client, server.url) == (200, b"first")
    assert await get(client, server.url) == (200, b"resent")
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_fresh_connection_closing_before_a_response_is_not_resent(raw_server, h1):
    async def drop(conn: Conn) -> None:
        await conn.request()

    server = await raw_server(drop)
    with pytest.raises(UpstreamUnavailable):
        await h1().send("POST", server.url, b"{}", [], timeout_s=T)
    assert server.connections == 1


async def test_resend_happens_only_once(raw_server, h1):
    async def handler(conn: Conn) -> None:
        if conn.index == 1:
            await conn.request()
            await conn.respond(200, b"first")
        await conn.request()  # then close without answering

    server = await raw_server(handler)
    client = h1()
    assert await get(client, server.url) == (200, b"first")
    with pytest.raises(UpstreamUnavailable):
        await get(client, server.url)
    assert server.connections == 2


# ---- the pool ----------------------------------------------------------------------------------
async def test_pool_limit_holds_under_concurrency(raw_server, h1):
    open_now = 0
    most_open = 0

    async def counting(conn: Conn) -> None:
        nonlocal open_now, most_open
        open_now += 1
        most_open = max(most_open, open_now)
        try:
            while (request := await conn.request()) is not None:
                await conn.respond(200, request.line)
        finally:
            open_now -= 1

    server = await raw_server(counting)
    client = h1(max_connections_per_origin=8)
    results = await asyncio.gather(*(get(client, f"{server.url}/{i}") for i in range(50)))
    assert [body for _, body in results] == [f"GET /{i} HTTP/1.1".encode() for i in range(50)]
    assert server.connections <= 8
    assert most_open <= 8


async def test_waiters_fail_when_the_pool_stays_busy(raw_server, h1):
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold(conn: Conn) -> None:
        await conn.request()
        holding.set()
        await release.wait()
        await conn.respond(200, b"late")

    server = await raw_server(hold)
    client = h1(max_connections_per_origin=1)
    first = asyncio.ensure_future(get(client, server.url))
    await holding.wait()
    with pytest.raises(UpstreamUnavailable):
        await client.send("GET", server.url, None, [], timeout_s=0.2)
    release.set()
    assert await first == (200, b"late")


async def test_expired_idle_connections_are_replaced(raw_server, h1):
    server = await raw_server()
    client = h1(keepalive_expiry_s=0.0)
    for _ in range(3):
        assert (await get(client, server.url))[0] == 200
    assert server.connections == 3
    await server.wait_finished(2)  # the expired ones were closed, not leaked


async def test_cancelled_request_frees_its_connection(raw_server, h1):
    received = asyncio.Event()

    async def silent(conn: Conn) -> None:
        await conn.request()
        received.set()
        await conn.wait_closed_by_client()

    server = await raw_server(silent)
    client = h1(max_connections_per_origin=1)
    task = asyncio.ensure_future(client.send("GET", server.url, None, [], timeout_s=T))
    await received.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.wait_finished(1)
    other = await raw_server()
    assert (await get(client, other.url))[0] == 200


async def test_closed_client_refuses_requests(raw_server, h1):
    server = await raw_server()
    client = h1()
    assert (await get(client, server.url))[0] == 200
    await client.aclose()
    await server.wait_finished(1)
    with pytest.raises(UpstreamUnavailable):
        await get(client, server.url)


# ---- deadlines and limits ------------------------------------------------------------------------
async def test_a_silent_server_is_a_timeout(raw_server, h1):
    async def silent(conn: Conn) -> None:
        await conn.request()
        await conn.wait_closed_by_client()

    server = await raw_server(silent)
    with pytest.raises(UpstreamTimeout):
        await h1().send("POST", server.url, b"{}", [], timeout_s=0.2)


async def test_the_first_body_byte_is_due_by_the_first_byte_deadline(raw_server, h1):
    async def head_then_nothing(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await conn.wait_closed_by_client()

    server = await raw_server(head_then_nothing)
    response = await h1(read_timeout_s=30).send("GET", server.url, None, [], timeout_s=0.2)
    with pytest.raises(UpstreamStalled) as caught:
        await anext(response.chunks())
    assert caught.value.first_byte
    await response.aclose()


async def test_the_read_timeout_may_be_given_per_request(raw_server, h1):
    async def stalls(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await conn.wait_closed_by_client()

    server = await raw_server(stalls)
    client = h1(read_timeout_s=30)
    response = await client.send("GET", server.url, None, [], timeout_s=T, read_timeout_s=0.2)
    chunks = response.chunks()
    assert await anext(chunks) == b"hi"
    with pytest.raises(UpstreamStalled, match=r"0\.2 s") as caught:
        await anext(chunks)
    assert not caught.value.first_byte
    await response.aclose()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_read_stops_past_its_limit_and_the_connection_is_dropped(raw_server, h1, framing):
    async def big(conn: Conn) -> None:
        await conn.request()
        if framing == "chunked":
            await conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(4):
                await conn.chunk(b"z" * 1000)
        else:
            await conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4000\r\n\r\n" + b"z" * 4000)
        await conn.wait_closed_by_client()

    server = await raw_server(big)
    response = await h1().send("GET", server.url, None, [], timeout_s=T)
    with pytest.raises(UpstreamTooLarge):
        await response.read(2500)
    await response.aclose()
    await server.wait_finished(1)


async def test_a_body_within_the_limit_is_read(raw_server, h1):
    server = await raw_server()
    response = await h1().send("GET", server.url + "/x", None, [], timeout_s=T)
    assert await response.read(len(b"ok GET /x HTTP/1.1 ")) == b"ok GET /x HTTP/1.1 "
    await response.aclose()


async def test_a_slow_consumer_is_not_taken_for_an_idle_backend(raw_server, h1):
    part = b"p" * 64 * 1024
    consumer_waited = asyncio.Event()

    async def fast(conn: Conn) -> None:
        await conn.request()
        await conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(part) * 8))
        for _ in range(8):
            await conn.write(part)
        await conn.wait_closed_by_client()

    server = await raw_server(fast)
    client = h1(high_water_bytes=16 * 1024)
    response = await client.send("GET", server.url, None, [], timeout_s=T, read_timeout_s=0.2)
    chunks = response.chunks()
    received = len(await anext(chunks))
    # Reading is paused above the high-water mark; the consumer dawdles past the idle timeout.
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, consumer_waited.set)
    await consumer_waited.wait()
    async for chunk in chunks:
        received += len(chunk)
    assert received == len(part) * 8
    await response.aclose()
