"""The soak benchmark's clients: streaming workers, slow clients, and socket counts from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

SLOW_KINDS = ("slow_head", "slow_body", "idle")


@dataclass(slots=True)
class StreamStats:
    """What the streaming workers saw, one outcome per request.

    Outcomes: `ok` (content, a finish reason and `[DONE]`); `status_NNN` (an error answer:
    the gateway did not find a backend that served it); `error_before_content` (an in-band
    error before any token: the request failed before its first byte and was not retried);
    `midstream_error` (an in-band error after tokens, which a client must see when its backend
    dies mid-stream); `truncated` (no `[DONE]`); `transport_error`.
    """

    outcomes: Counter[str] = field(default_factory=Counter)
    midstream_by_backend: Counter[str] = field(default_factory=Counter)
    ttfb_s: list[float] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def record_failure(self, started: float, outcome: str, backend: str, detail: str) -> None:
        """Keep the first failures for the JSON (when and where), bounded in number."""
        if len(self.failures) < 50:
            self.failures.append(
                {"at_s": round(started, 3), "outcome": outcome, "backend": backend,
                 "detail": detail[:300]}
            )  # fmt: skip


@dataclass(frozen=True, slots=True)
class StreamLoad:
    """The requests the streaming workers send."""

    url: str
    model: str
    max_tokens: int
    groups: int
    system_bytes: int
    deadline: float
    max_requests_per_worker: int


def _system_prompt(group: int, size: int) -> str:
    words = random.Random(group).choices(
        ["route", "cache", "token", "prefix", "block", "engine", "stream", "batch", "queue"],
        k=size // 6,
    )
    return f"group {group}: " + " ".join(words)


def classify(status: int, body: bytes) -> tuple[str, str]:
    """The outcome of one streamed answer, and a detail for failures."""
    if status != 200:
        return f"status_{status}", body[:300].decode(errors="replace")
    content = 0
    finished = done = False
    for event in body.split(b"\n\n"):
        data = event.strip().removeprefix(b"data: ").strip()
        if not data:
            continue
        if data == b"[DONE]":
            done = True
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return "truncated", data[:300].decode(errors="replace")
        if "error" in chunk:
            kind = "midstream_error" if content else "error_before_content"
            return kind, str(chunk["error"])
        for choice in chunk.get("choices", ()):
            content += bool(choice.get("delta", {}).get("content"))
            finished = finished or choice.get("finish_reason") is not None
    if done and finished and content:
        return "ok", ""
    return "truncated", f"content={content} finished={finished} done={done}"


async def stream_worker(
    client: httpx.AsyncClient, load: StreamLoad, stats: StreamStats, seed: int, t0: float
) -> None:
    """Send streamed chat completions one after another until the deadline or the count."""
    rng = random.Random(seed)
    for n in range(load.max_requests_per_worker):
        if time.monotonic() >= load.deadline:
            return
        group = rng.randrange(load.groups)
        body = {
            "model": load.model,
            "stream": True,
            "max_tokens": load.max_tokens,
            "messages": [
                {"role": "system", "content": _system_prompt(group, load.system_bytes)},
                {"role": "user", "content": f"question {seed}-{n}-{rng.random():.6f}"},
            ],
        }
        started = time.monotonic()
        backend = "-"
        try:
            async with client.stream("POST", load.url, json=body) as response:
                backend = response.headers.get("x-gateway-backend", "-")
                parts: list[bytes] = []
                async for chunk in response.aiter_raw():
                    if not parts:
                        stats.ttfb_s.append(time.monotonic() - started)
                    parts.append(chunk)
                outcome, detail = classify(response.status_code, b"".join(parts))
        except httpx.HTTPError as exc:
            outcome, detail = "transport_error", f"{type(exc).__name__}: {exc}"
        stats.outcomes[outcome] += 1
        if outcome == "midstream_error":
            stats.midstream_by_backend[backend] += 1
        if outcome != "ok":
            stats.record_failure(started - t0, outcome, backend, detail)


@dataclass(slots=True)
class SlowStats:
    """How the gateway ended each slow client's connection, per kind."""

    connections: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)  # "kind status" -> count
    closed_silently: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    held_max_s: dict[str, float] = field(default_factory=dict)
    outlived_cap: Counter[str] = field(default_factory=Counter)


_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"


async def _trickle(writer: asyncio.StreamWriter, kind: str, interval_s: float) -> None:
    """Write the slow client's bytes: a head one header byte at a time, or a body likewise."""
    if kind == "idle":
        return
    if kind == "slow_head":
        writer.write(_HEAD)
        payload = b"X-Slow: " + b"a" * 100_000
    else:
        writer.write(_HEAD + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        payload = b"{" + b" " * 100_000
    for byte in payload:
        await writer.drain()
        writer.write(bytes((byte,)))
        await asyncio.sleep(interval_s)


async def slow_client(
    host: str, port: int, kind: str, stats: SlowStats, deadline: float, cap_s: float
) -> None:
    """Hold connections open as a slow or idle client would, one after another, until the deadline.

    Each connection lasts until the gateway ends it (an answer, or a close) or `cap_s` passes,
    which the gateway should never allow (it is counted under `outlived_cap`).
    """
    while time.monotonic() < deadline:
        opened = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            stats.refused[kind] += 1
            await asyncio.sleep(1.0)
            continue
        stats.connections[kind] += 1
        trickle = asyncio.create_task(_trickle(writer, kind, 1.0))
        try:
            head = await asyncio.wait_for(reader.read(4096), cap_s)
        except TimeoutError:
            stats.outlived_cap[kind] += 1
            head = None
        except OSError:
            head = b""
        finally:
            trickle.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await trickle
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        held = time.monotonic() - opened
        stats.held_max_s[kind] = max(stats.held_max_s.get(kind, 0.0), held)
        if head:
            status = head.split(b" ", 2)[1].decode(errors="replace") if b" " in head else "?"
            stats.answered[f"{kind} {status}"] += 1
        elif head is not None:
            stats.closed_silently[kind] += 1


def rss_bytes(pid: int) -> int | None:
    """Resident set size of one process (None once it has gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


_TCP_STATES = {"01": "ESTABLISHED", "08": "CLOSE_WAIT"}


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = fd.readlink().name
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def open_sockets(pid: int, listen_port: int, upstream_ports: set[int]) -> dict[str, int]:
    """The process's open TCP connections: from clients (to `listen_port`) and to backends."""
    inodes = _socket_inodes(pid)
    counts = {"client": 0, "upstream": 0}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[9] not in inodes or cols[3] not in _TCP_STATES:
                    continue
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if local_port == listen_port:
                    counts["client"] += 1
                elif remote_port in upstream_ports:
                    counts["upstream"] += 1
    return counts
