"""H1Connection fed bytes directly: flow control, framing edge cases, reuse decisions."""

from __future__ import annotations

import asyncio

import pytest

from gateway.proxy.h1conn import H1Connection, StaleConnection
from gateway.proxy.upstream import UpstreamBroken, UpstreamUnavailable
from tests.unit.proxy.fakes import FakeOwner, connected

HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def start(conn: H1Connection, reply: bytes) -> None:
    """Send a request and feed `reply` once the exchange waits for it; returns after the head."""
    exchange = asyncio.ensure_future(conn.exchange(b"GET / HTTP/1.1\r\n\r\n", None, False, 1e9))
    # Callbacks run in order: the exchange's first step (write, then wait) comes before this.
    asyncio.get_running_loop().call_soon(conn.data_received, reply)
    await exchange


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_reading_pauses_above_the_high_water_mark_and_resumes_when_taken():
    conn, transport = connected(FakeOwner(), high_water=1000)
    await start(conn, HEAD_CHUNKED + chunk(b"a" * 600))
    assert transport.reading
    conn.data_received(chunk(b"b" * 600))
    assert not transport.reading
    assert conn.take() == b"a" * 600 + b"b" * 600
    assert transport.reading


async def test_release_after_a_complete_body_checks_the_connection_in():
    owner = FakeOwner()
    conn, transport = connected(owner)
    await start(conn, HEAD_CHUNKED + chunk(b"x") + b"0\r\n\r\n")
    assert conn.complete
    conn.release()
    assert owner.checked_in == [conn]
    assert not transport.closed
    assert conn.served == 1


async def test_a_response_before_the_request_body_was_sent_spoils_reuse():
    owner = FakeOwner()
    conn, transport = connected(owner)
    transport.unsent = 10
    await start(conn, b"HTTP/1.1 413 Too Large\r\ncontent-length: 0\r\n\r\n")
    conn.release()
    assert transport.closed
    assert owner.checked_in == []


async def test_release_mid_body_closes_the_connection():
    owner = FakeOwner()
    conn, transport = connected(owner)
    await start(conn, HEAD_CHUNKED + chunk(b"x"))
    conn.release()
    assert transport.closed
    assert owner.lost_conns == [conn]
    assert owner.checked_in == []


async def test_bytes_while_idle_close_the_connection():
    owner = FakeOwner()
    conn, transport = connected(owner)
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    assert transport.closed
    assert owner.lost_conns == [conn]


async def test_a_second_response_in_one_read_spoils_only_reuse():
    owner = FakeOwner()
    conn, transport = connected(owner)
    one = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    await start(conn, one + one)
    assert conn.complete
    assert conn.take() == b"hi"
    conn.release()
    assert transport.closed
    assert owner.checked_in == []


async def test_eof_delimited_body_ends_at_connection_lost():
    conn, _ = connected(FakeOwner())
    await start(conn, b"HTTP/1.1 200 OK\r\n\r\npart")
    assert not conn.complete
    conn.connection_lost(None)
    assert conn.complete
    assert conn.take() == b"part"


async def test_framed_body_cut_by_connection_lost_is_broken():
    conn, _ = connected(FakeOwner())
    await start(conn, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart")
    conn.connection_lost(ConnectionResetError())
    assert conn.take() == b"part"
    with pytest.raises(UpstreamBroken):
        conn.body_waiter()


async def test_malformed_head_is_unavailable():
    conn, transport = connected(FakeOwner())
    with pytest.raises(UpstreamUnavailable):
        await start(conn, b"HTTP/1.1 abc\r\n\r\n")
    assert transport.closed


async def test_upgrade_responses_are_refused():
    conn, _ = connected(FakeOwner())
    with pytest.raises(UpstreamUnavailable):
        await start(conn, b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n")


async def test_headers_are_lower_cased_and_kept_in_order():
    conn, _ = connected(FakeOwner())
    await start(conn, b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\nx-a: 2\r\n\r\n")
    assert conn.headers == [(b"x-a", b"1"), (b"content-length", b"0"), (b"x-a", b"2")]
    assert conn.complete


async def test_a_closed_connection_is_stale_only_once_it_has_served():
    owner = FakeOwner()
    conn, transport = connected(owner)
    conn.close()
    conn.close()
    assert transport.closed
    assert owner.lost_conns == [conn]
    with pytest.raises(UpstreamUnavailable):
        await conn.exchange(b"GET / HTTP/1.1\r\n\r\n", None, False, 1e9)
    conn.served = 1
    with pytest.raises(StaleConnection):
        await conn.exchange(b"GET / HTTP/1.1\r\n\r\n", None, False, 1e9)
