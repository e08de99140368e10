"""Tenant limits held in memory and in Redis: GCRA per minute, tokens reserved then settled,
concurrency, the 429 and its headers, and Redis trouble degrading to per-replica shares."""

from __future__ import annotations

import asyncio

import pytest

from gateway.admission.limits import MemoryLimits, Verdict, duration, scaled
from gateway.admission.redis_limits import RedisLimits
from gateway.prefix.redis_guard import script_client
from gateway.settings import LimitSettings
from tests.support.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def admitted(store, tenant: str, limits: LimitSettings, n: int, tokens: int = 1) -> int:  # type: ignore[no-untyped-def]
    count = 0
    for i in range(n):
        verdict = await store.acquire(tenant, limits, tokens, f"{tenant}-{i}")
        count += verdict.allowed
    return count


def test_n_requests_per_minute_get_n_then_one_more_after_its_share_of_a_minute() -> None:
    clock = Clock()
    store = MemoryLimits(clock)
    limits = LimitSettings(requests_per_min=6)
    assert run(admitted(store, "a", limits, 10)) == 6
    refused = run(store.acquire("a", limits, 1, "x"))
    assert (refused.allowed, refused.reason) == (False, "requests")
    assert refused.retry_after_s == pytest.approx(10.0)
    assert run(admitted(store, "b", limits, 10)) == 6  # tenants are apart
    clock.now += 10.0
    assert run(admitted(store, "a", limits, 3)) == 1


def test_tokens_are_reserved_then_settled_from_usage() -> None:
    store = MemoryLimits(Clock())
    limits = LimitSettings(tokens_per_min=1000)
    assert run(store.acquire("a", limits, 600, "1")).allowed
    assert not run(store.acquire("a", limits, 600, "2")).allowed
    run(store.settle("a", limits, 100 - 600))  # the answer used only 100 of 600
    verdict = run(store.acquire("a", limits, 600, "3"))
    assert verdict.allowed
    assert verdict.tokens == (1000, 300, pytest.approx(42.0))


def test_concurrency_slots_are_held_until_released() -> None:
    store = MemoryLimits(Clock())
    limits = LimitSettings(max_concurrent=2)
    assert run(admitted(store, "a", limits, 3)) == 2
    assert run(store.acquire("a", limits, 1, "late")).reason == "concurrency"
    run(store.release("a", limits, "a-0"))
    assert run(store.acquire("a", limits, 1, "late")).allowed


def test_headers_and_429_follow_openai() -> None:
    verdict = Verdict(False, "requests", 2.2, (60, 0, 1.5), (1000, 10, 360.0))
    headers = dict(verdict.headers())
    assert headers[b"x-ratelimit-limit-requests"] == b"60"
    assert headers[b"x-ratelimit-remaining-requests"] == b"0"
    assert headers[b"x-ratelimit-reset-requests"] == b"1.5s"
    assert headers[b"x-ratelimit-reset-tokens"] == b"6m0s"
    error = verdict.error()
    assert (error.status, error.retry_after_s, error.code) == (429, 3, "rate_limit_exceeded")
    assert duration(0.02) == "20ms"


def test_shares_split_each_limit() -> None:
    limits = LimitSettings(requests_per_min=10, tokens_per_min=1001, max_concurrent=1)
    assert scaled(limits, 1 / 3) == LimitSettings(
        requests_per_min=3, tokens_per_min=333, max_concurrent=1
    )


def redis_store(url: str, prefix: str, replicas: int = 1) -> RedisLimits:
    return RedisLimits(
        script_client(url, max_connections=4, socket_timeout_s=1.0),
        prefix,
        timeout_s=1.0,
        replicas=lambda: replicas,
    )


def test_redis_limits_are_shared_by_two_stores(redis_url: str, unique_prefix: str) -> None:
    async def scenario() -> tuple[int, Verdict, Verdict]:
        one, two = redis_store(redis_url, unique_prefix), redis_store(redis_url, unique_prefix)
        limits = LimitSettings(requests_per_min=5, tokens_per_min=10_000, max_concurrent=50)
        count = 0
        for i in range(12):
            store = (one, two)[i % 2]
            count += (await store.acquire("t", limits, 100, f"l{i}")).allowed
        tokens = LimitSettings(tokens_per_min=1000)
        first = await one.acquire("u", tokens, 900, "u1")
        await one.finish("u", tokens, "u1", -800)  # used 100
        await one.flush()
        second = await two.acquire("u", tokens, 800, "u2")
        await one.close()
        await two.close()
        return count, first, second

    count, first, second = asyncio.run(scenario())
    assert count == 5
    assert first.allowed
    assert second.allowed
    assert second.tokens is not None
    assert second.tokens[1] == 100


def test_redis_finish_is_carried_by_the_next_acquire_or_flushed_for_the_others(
    redis_url: str, unique_prefix: str
) -> None:
    async def scenario() -> list[bool]:
        one, two = redis_store(redis_url, unique_prefix), redis_store(redis_url, unique_prefix)
        limits = LimitSettings(max_concurrent=1)
        seen = [(await one.acquire("t", limits, 1, "a")).allowed]
        seen.append((await two.acquire("t", limits, 1, "b")).allowed)  # a holds the slot
        await one.finish("t", limits, "a", 0)
        seen.append((await one.acquire("t", limits, 1, "c")).allowed)  # carries a's release
        await one.finish("t", limits, "c", 0)
        await one.flush()  # what the timer does 5 ms after a finish
        seen.append((await two.acquire("t", limits, 1, "d")).allowed)
        await one.close()
        await two.close()
        return seen

    assert asyncio.run(scenario()) == [True, False, True, True]


def test_redis_slot_freed_while_redis_was_down_is_freed_when_it_is_back(
    unique_prefix: str,
) -> None:
    now = [0.0]
    # The slot must outlive the restart for its release to matter: keep the data on disk.
    redis_server = RedisServer(extra_args=("--appendonly", "yes")).start()

    async def scenario() -> list[bool]:
        one = RedisLimits(
            script_client(redis_server.url, max_connections=4, socket_timeout_s=1.0),
            unique_prefix,
            timeout_s=1.0,
            replicas=lambda: 1,
            clock=lambda: now[0],
        )
        two = redis_store(redis_server.url, unique_prefix)
        limits = LimitSettings(max_concurrent=1)
        seen = [(await one.acquire("t", limits, 1, "a")).allowed]
        redis_server.stop()
        await one.finish("t", limits, "a", 0)
        await one.flush()  # fails: the release stays owed
        redis_server.start()
        now[0] += 2.0  # past the breaker's cooldown
        await one.flush()
        seen.append((await two.acquire("t", limits, 1, "b")).allowed)
        await one.close()
        await two.close()
        return seen

    try:
        assert asyncio.run(scenario()) == [True, True]
    finally:
        redis_server.stop()


def test_redis_down_degrades_to_a_share_and_never_fails(redis_server, unique_prefix) -> None:
    changes: list[bool] = []

    async def scenario() -> tuple[int, int]:
        store = RedisLimits(
            script_client(redis_server.url, max_connections=4, socket_timeout_s=0.5),
            unique_prefix,
            timeout_s=0.5,
            replicas=lambda: 2,
            on_degraded=changes.append,
        )
        limits = LimitSettings(requests_per_min=10)
        shared = await admitted(store, "warm", limits, 1)  # learns there are 2 replicas
        redis_server.stop()
        degraded = await admitted(store, "t", limits, 12)
        await store.close()
        return shared, degraded

    shared, degraded = asyncio.run(scenario())
    assert shared == 1
    assert degraded == 5  # half of 10: this replica's share
    assert changes == [True]
