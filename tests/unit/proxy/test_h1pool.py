"""OriginPool bookkeeping: LIFO reuse, expiry from the old end, hand-over to waiters, slots."""

from __future__ import annotations

import asyncio

import pytest

from gateway.proxy.h1conn import H1Connection
from gateway.proxy.h1pool import OriginPool
from gateway.proxy.upstream import UpstreamUnavailable
from tests.unit.proxy.fakes import connected


def make_pool(limit: int = 4, expiry_s: float = 30.0) -> OriginPool:
    return OriginPool(
        asyncio.get_running_loop(),
        "127.0.0.1",
        1,
        limit=limit,
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
        keepalive_expiry_s=expiry_s,
        high_water=1024,
        on_idle=lambda: None,
    )


def open_conns(pool: OriginPool, n: int) -> list[H1Connection]:
    """n connections counted against the pool, as if connected by it."""
    conns = [connected(pool)[0] for _ in range(n)]
    pool.total += n
    return conns


async def test_the_most_recently_returned_connection_is_reused_first():
    pool = make_pool()
    a, b = open_conns(pool, 2)
    pool.checkin(a)
    pool.checkin(b)
    assert await pool.acquire(1e9) is b
    assert await pool.acquire(1e9) is a
    assert pool.total == 2


async def test_expiry_drops_the_oldest_idle_connections():
    pool = make_pool(expiry_s=10.0)
    a, b, c = open_conns(pool, 3)
    for conn in (a, b, c):
        pool.checkin(conn)
    now = asyncio.get_running_loop().time()
    a.idle_since, b.idle_since, c.idle_since = now - 30, now - 20, now
    assert pool.drop_expired(now) == 1
    assert pool.idle == [c]
    assert a.closed
    assert b.closed
    assert not c.closed
    assert pool.total == 1


async def test_an_expired_newest_connection_empties_the_stack():
    pool = make_pool(expiry_s=10.0)
    conns = open_conns(pool, 3)
    for conn in conns:
        pool.checkin(conn)
        conn.idle_since -= 60
    # Nothing listens on port 1, so the fallback to a new connection fails.
    with pytest.raises(UpstreamUnavailable):
        await pool.acquire(asyncio.get_running_loop().time() + 10)
    assert all(conn.closed for conn in conns)
    assert pool.idle == []
    assert pool.total == 0


async def test_a_returned_connection_goes_straight_to_the_oldest_waiter():
    pool = make_pool(limit=1)
    (a,) = open_conns(pool, 1)
    deadline = asyncio.get_running_loop().time() + 10
    first = asyncio.ensure_future(pool.acquire(deadline))
    second = asyncio.ensure_future(pool.acquire(deadline))
    # Runs after both tasks' first steps, which queue them as waiters.
    asyncio.get_running_loop().call_soon(pool.checkin, a)
    assert await first is a
    assert not second.done()
    second.cancel()
    assert pool.idle == []


async def test_losing_an_idle_connection_frees_its_slot():
    pool = make_pool()
    a, b = open_conns(pool, 2)
    pool.checkin(a)
    pool.checkin(b)
    a.connection_lost(None)
    assert pool.idle == [b]
    assert pool.total == 1


async def test_waiting_past_the_deadline_is_unavailable():
    pool = make_pool(limit=1)
    open_conns(pool, 1)
    with pytest.raises(UpstreamUnavailable, match="busy"):
        await pool.acquire(asyncio.get_running_loop().time() + 0.01)
    assert pool.total == 1


async def test_closing_the_pool_closes_idle_connections_and_refuses_more():
    pool = make_pool()
    (a,) = open_conns(pool, 1)
    pool.checkin(a)
    pool.close()
    assert a.closed
    assert pool.total == 0
    with pytest.raises(UpstreamUnavailable):
        await pool.acquire(1e9)
