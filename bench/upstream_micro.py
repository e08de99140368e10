"""Microbenchmark of upstream HTTP clients: httpx, H1Upstream and aiohttp against one sim backend.

Usage: python -m bench.upstream_micro [--requests 20000] [--stream-requests 5000]
       [--concurrency 32] [--max-seconds 60] [--rounds 1] [--out bench/results/upstream_micro.json]

One zero-latency simulated backend runs in a child process (uvloop + httptools, stopped by pid
at the end). Each client runs in this process on a fresh uvloop loop: a warm-up, then the given
number of requests from `concurrency` workers, for small non-streaming chat POSTs and for
64-token streams read chunk by chunk. Reported per run: requests/s, this process's CPU seconds
per 1,000 requests (the client's cost, the backend's CPU is not included), latency p50/p99 and
body bytes per request (a check that every client read the same responses). aiohttp is
measured only if it is installed. Every run stops after `max-seconds`, whatever its count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
import uvloop

from bench.procs import ChildProcess, free_port_range, wait_until
from gateway.proxy.forward import FORWARD_HEADERS
from gateway.proxy.h1client import H1Upstream
from gateway.proxy.upstream import (
    Headers,
    UpstreamBroken,
    UpstreamClient,
    UpstreamResponse,
    UpstreamUnavailable,
)
from gateway.settings import UpstreamSettings

ROOT = Path(__file__).resolve().parent.parent
MODEL = "sim-llama-8b"
WARMUP = 500
STREAM_TOKENS = 64


# httpx behind the gateway's UpstreamClient interface, as the gateway used it before H1Upstream.
class _HttpxResponse:
    """An httpx streaming response seen through the UpstreamResponse interface."""

    __slots__ = ("_response", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code

    def header(self, name: bytes) -> bytes | None:
        for key, value in self._response.headers.raw:
            if key.lower() == name:
                return value
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamBroken(f"{type(exc).__name__}: {exc}") from exc

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise UpstreamBroken(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxUpstream:
    """One pooled httpx.AsyncClient with keep-alive, shared by every request."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_expiry_s: float,
    ) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive_expiry_s,
            ),
            timeout=httpx.Timeout(
                connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=None
            ),
            follow_redirects=False,
            trust_env=False,
        )
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Headers, *, timeout_s: float
    ) -> UpstreamResponse:
        request = self._client.build_request(
            method,
            url,
            content=body,
            headers=list(headers),
            timeout=httpx.Timeout(
                connect=min(self._connect_timeout_s, timeout_s),
                read=timeout_s,
                write=timeout_s,
                pool=timeout_s,
            ),
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._client.aclose()


class Client(Protocol):
    """One client under test: sends a chat POST and reads the whole body."""

    async def request(self, url: str, body: bytes, stream: bool) -> int:
        """Returns the number of body bytes read."""
        ...

    async def aclose(self) -> None:
        """Release every connection."""
        ...


class ViaInterface:
    """A client behind the gateway's UpstreamClient interface."""

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    async def request(self, url: str, body: bytes, stream: bool) -> int:
        response = await self._client.send("POST", url, body, FORWARD_HEADERS, timeout_s=30.0)
        try:
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            if not stream:
                return len(await response.read())
            size = 0
            async for chunk in response.chunks():
                size += len(chunk)
            return size
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


class ViaAiohttp:
    """aiohttp.ClientSession with a keep-alive connector of the same size."""

    def __init__(self, limit: int, keepalive_s: float) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=limit, limit_per_host=limit, keepalive_timeout=keepalive_s
            ),
            auto_decompress=False,
        )
        self._headers = {k.decode(): v.decode() for k, v in FORWARD_HEADERS}

    async def request(self, url: str, body: bytes, stream: bool) -> int:
        async with self._session.post(url, data=body, headers=self._headers) as response:
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            if not stream:
                return len(await response.read())
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
            return size

    async def aclose(self) -> None:
        await self._session.close()


def client_factories(settings: UpstreamSettings) -> dict[str, Callable[[], Client]]:
    """The clients to compare, configured as the gateway configures its upstream client."""
    factories: dict[str, Callable[[], Client]] = {
        "httpx": lambda: ViaInterface(
            HttpxUpstream(
                max_connections=settings.max_connections_per_backend,
                connect_timeout_s=settings.connect_timeout_s,
                read_timeout_s=settings.read_timeout_s,
                keepalive_expiry_s=settings.keepalive_expiry_s,
            )
        ),
        "h1": lambda: ViaInterface(
            H1Upstream(
                max_connections_per_origin=settings.max_connections_per_backend,
                connect_timeout_s=settings.connect_timeout_s,
                read_timeout_s=settings.read_timeout_s,
                keepalive_expiry_s=settings.keepalive_expiry_s,
            )
        ),
    }
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return factories
    factories["aiohttp"] = lambda: ViaAiohttp(
        settings.max_connections_per_backend, settings.keepalive_expiry_s
    )
    return factories


def chat_body(stream: bool) -> bytes:
    """A small chat request; streams ask for 64 tokens (64 content chunks)."""
    return orjson.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say something short about caches."}],
            "max_tokens": STREAM_TOKENS if stream else 16,
            "stream": stream,
        }
    )


async def drive(
    client: Client, url: str, stream: bool, count: int, concurrency: int, max_s: float
) -> dict[str, Any]:
    """`count` requests from `concurrency` workers; returns throughput, CPU and latency."""
    body = chat_body(stream)
    latencies: list[float] = []
    sizes = 0
    errors: list[str] = []
    remaining = count
    clock = time.perf_counter
    stop_at = clock() + max_s

    async def worker() -> None:
        nonlocal remaining, sizes
        while remaining > 0 and clock() < stop_at:
            remaining -= 1
            start = clock()
            try:
                size = await client.request(url, body, stream)
            except Exception as exc:  # counted and reported, never hidden
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(clock() - start)
            sizes += size

    gc.collect()
    wall0, cpu0 = clock(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    done = len(latencies)
    latencies.sort()
    return {
        "requests": done,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(wall, 3),
        "req_per_s": round(done / wall, 1) if wall else 0.0,
        "cpu_s_per_1k": round(cpu / done * 1000, 4) if done else None,
        "p50_ms": round(latencies[done // 2] * 1000, 3) if done else None,
        "p99_ms": round(latencies[min(done - 1, done * 99 // 100)] * 1000, 3) if done else None,
        "bytes_per_request": round(sizes / done) if done else None,
    }


async def measure(
    make: Callable[[], Client], url: str, stream: bool, args: argparse.Namespace
) -> dict[str, Any]:
    """Warm one client up, then drive it; the client is closed afterwards."""
    client = make()
    try:
        await drive(client, url, stream, WARMUP, args.concurrency, args.max_seconds)
        count = args.stream_requests if stream else args.requests
        return await drive(client, url, stream, count, args.concurrency, args.max_seconds)
    finally:
        await client.aclose()


@contextlib.contextmanager
def sim_backend(log_dir: Path) -> Any:
    """One zero-latency sim backend in a child process; yields its URL."""
    port = free_port_range(1)
    argv = [
        sys.executable,
        *("-m", "gateway", "sim", "--backends", "1", "--zero-latency"),
        *("--base-port", str(port)),
    ]
    log_dir.mkdir(parents=True, exist_ok=True)
    child = ChildProcess("sim", argv, log_dir / "upstream_micro_sim.log", ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + "/health", timeout=1).status_code == 200, child, 30)
        yield url
    finally:
        child.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every client and workload, `rounds` times; keeps each pair's best round by req/s."""
    factories = client_factories(UpstreamSettings())
    chosen = [name for name in factories if not args.clients or name in args.clients]
    best: dict[str, dict[str, Any]] = {}
    with sim_backend(args.out.parent / "logs") as base:
        url = base + "/v1/chat/completions"
        for _ in range(args.rounds):
            for workload, stream in (("small", False), ("stream64", True)):
                for name in chosen:
                    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                        result = runner.run(measure(factories[name], url, stream, args))
                    key = f"{workload}/{name}"
                    print(f"  {key:18} {result['req_per_s']:>9} req/s", file=sys.stderr)
                    if key not in best or result["req_per_s"] > best[key]["req_per_s"]:
                        best[key] = {"workload": workload, "client": name, **result}
    return {
        "benchmark": "upstream_micro",
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "warmup_requests": WARMUP,
        "stream_tokens": STREAM_TOKENS,
        "python": sys.version.split()[0],
        "results": list(best.values()),
    }


def table(report: dict[str, Any]) -> str:
    """The results as a fixed-width table, with throughput and CPU relative to httpx."""
    rows = report["results"]
    base = {r["workload"]: r for r in rows if r["client"] == "httpx"}
    lines = [
        f"{'workload':9} {'client':8} {'req/s':>9} {'x httpx':>7} {'CPU s/1k':>9} "
        f"{'CPU x httpx':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    ]
    for r in rows:
        ref = base.get(r["workload"])
        speed = r["req_per_s"] / ref["req_per_s"] if ref and ref["req_per_s"] else float("nan")
        cpu = (
            r["cpu_s_per_1k"] / ref["cpu_s_per_1k"]
            if ref and ref["cpu_s_per_1k"] and r["cpu_s_per_1k"]
            else float("nan")
        )
        lines.append(
            f"{r['workload']:9} {r['client']:8} {r['req_per_s']:>9.0f} {speed:>7.2f} "
            f"{r['cpu_s_per_1k'] or 0:>9.3f} {cpu:>10.2f} {r['p50_ms'] or 0:>8.2f} "
            f"{r['p99_ms'] or 0:>8.2f} {r['errors']:>6}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="non-streaming requests")
    parser.add_argument("--stream-requests", type=int, default=5_000, help="64-token streams")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap per run")
    parser.add_argument("--rounds", type=int, default=1, help="repeat and keep the best")
    parser.add_argument("--clients", nargs="*", help="subset of: httpx h1 aiohttp")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "upstream_micro.json"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run, write the JSON report, print the table."""
    args = parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
