"""The pipelined Redis client against a real redis-server: order, give-ups, faults, auth."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.prefix.resp import PipelinedRedis, encode_command
from tests.support.redis_server import RedisServer


def test_commands_encode_as_resp_arrays_of_bulk_strings() -> None:
    assert encode_command(("SET", b"k", 7, 1.5)) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n7\r\n$3\r\n1.5\r\n"
    )
    with pytest.raises(TypeError):
        encode_command(("SET", object()))


async def test_concurrent_calls_get_their_own_replies(redis_url: str, unique_prefix: str) -> None:
    client = PipelinedRedis(redis_url, socket_timeout_s=5.0)
    try:
        keys = [f"{unique_prefix}{i}" for i in range(300)]
        await asyncio.gather(*(client.execute("SET", k, f"v{i}") for i, k in enumerate(keys)))
        values = await asyncio.gather(*(client.execute("GET", k) for k in keys))
        assert values == [f"v{i}".encode() for i in range(300)]
    finally:
        await client.aclose()


async def test_a_caller_that_gives_up_leaves_no_reply_for_the_next(
    redis_url: str, unique_prefix: str
) -> None:
    client = PipelinedRedis(redis_url, socket_timeout_s=5.0)
    try:
        # BLPOP holds the connection for 0.3 s and then answers nil; its caller left at once.
        blocked = asyncio.create_task(client.execute("BLPOP", f"{unique_prefix}none", 0.3))
        await asyncio.sleep(0)  # written before the cancel
        blocked.cancel()
        assert await client.execute("PING") == b"PONG"  # not BLPOP's nil
        assert await client.execute("ECHO", "after") == b"after"
    finally:
        await client.aclose()


async def test_error_replies_raise_and_the_connection_goes_on(redis_url: str) -> None:
    client = PipelinedRedis(redis_url, socket_timeout_s=5.0)
    try:
        with pytest.raises(NoScriptError):
            await client.evalsha("0" * 40, 0)
        with pytest.raises(ResponseError, match="ERR"):
            await client.eval("return redis.error_reply('ERR bad script')", 0)
        assert await client.eval("return {1, 'two', {3}}", 0) == [1, b"two", [3]]
    finally:
        await client.aclose()


async def test_a_stuck_server_times_out_and_a_resumed_one_answers(
    redis_server: RedisServer,
) -> None:
    client = PipelinedRedis(redis_server.url, socket_timeout_s=0.2)
    try:
        assert await client.execute("PING") == b"PONG"
        redis_server.pause()
        try:
            with pytest.raises(RedisTimeoutError):
                await client.execute("PING")
        finally:
            redis_server.resume()
        assert await client.execute("PING") == b"PONG"  # on a new connection
    finally:
        await client.aclose()


async def test_a_restarted_server_is_reconnected(redis_server: RedisServer) -> None:
    client = PipelinedRedis(redis_server.url, socket_timeout_s=1.0)
    try:
        assert await client.execute("PING") == b"PONG"
        redis_server.stop()
        with pytest.raises(RedisConnectionError):
            await client.execute("PING")
        redis_server.start()
        assert await client.execute("PING") == b"PONG"
    finally:
        await client.aclose()


async def test_password_and_database_come_from_the_url(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    admin.config_set("requirepass", "s3cret")
    admin = redis.Redis.from_url(redis_server.url, password="s3cret", socket_timeout=5)
    try:
        url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/3"
        client = PipelinedRedis(url, socket_timeout_s=1.0)
        try:
            await client.execute("SET", "k", "in-db-3")
        finally:
            await client.aclose()
        db3 = redis.Redis.from_url(url, socket_timeout=5)
        assert db3.get("k") == b"in-db-3"
        assert admin.get("k") is None  # not in database 0
        wrong = PipelinedRedis(redis_server.url, socket_timeout_s=1.0)
        try:
            with pytest.raises(ResponseError, match="NOAUTH"):
                await wrong.execute("GET", "k")
        finally:
            await wrong.aclose()
    finally:
        admin.config_set("requirepass", "")


async def test_a_closed_client_refuses_calls(redis_url: str) -> None:
    client = PipelinedRedis(redis_url, socket_timeout_s=1.0)
    assert await client.execute("PING") == b"PONG"
    await client.aclose()
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")
