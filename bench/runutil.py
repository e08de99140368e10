"""Small helpers of the routing-quality runner: event loop, Redis key cleanup, JSON writes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh (uv)loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def clean_redis(url: str | None, prefix: str) -> None:
    """Delete the Redis keys of one run (best effort: a warning on failure)."""
    if not url:
        return
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=5)
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()
    except Exception as exc:  # the benchmark's own cleanup must not hide results
        print(f"  warning: could not delete redis keys {prefix}*: {exc}", file=sys.stderr)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    tmp.replace(path)
