"""Open-loop replay of a workload through the gateway: streaming chat, TTFT and end-to-end."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import orjson

from bench.workloads import BenchRequest

BACKEND_HEADER = "x-gateway-backend"


@dataclass(slots=True)
class Outcome:
    """What the client saw of one request (times in wall seconds)."""

    rid: int
    scheduled: float
    lag: float = 0.0
    ttft: float | None = None
    e2e: float | None = None
    backend: str | None = None
    status: int = 0
    error: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    waited: float | None = None
    gaps: list[float] | None = None
    gateway: int = 0

    @property
    def ttft_or_censored(self) -> float | None:
        """TTFT, or for a request cut off by the deadline before its first token, how long
        it had waited (a lower bound that keeps the slowest requests in the percentiles)."""
        return self.ttft if self.ttft is not None else self.waited

    @property
    def ok(self) -> bool:
        """True when the stream completed and produced content."""
        return self.error is None and self.ttft is not None

    @property
    def mean_gap(self) -> float | None:
        """Mean gap between this request's content chunks (None with fewer than two)."""
        return sum(self.gaps) / len(self.gaps) if self.gaps else None


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Where and how to replay: gateway URLs (requests spread round-robin), model, time scale."""

    base_urls: tuple[str, ...]
    model: str
    time_scale: float
    deadline_s: float
    request_timeout_s: float = 120.0
    max_connections: int = 1024


def request_body(request: BenchRequest, model: str) -> bytes:
    """The JSON body of a streaming chat completion with usage in the last chunk."""
    body = {
        "model": model,
        "messages": list(request.messages),
        "max_tokens": request.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return orjson.dumps(body)


def chains(requests: Sequence[BenchRequest]) -> list[list[BenchRequest]]:
    """Independent requests alone; each session's turns in order, as one chain."""
    sessions: dict[int, list[BenchRequest]] = {}
    out: list[list[BenchRequest]] = []
    for r in sorted(requests, key=lambda q: (q.at, q.rid)):
        if r.session < 0:
            out.append([r])
        elif r.session in sessions:
            sessions[r.session].append(r)
        else:
            sessions[r.session] = [r]
            out.append(sessions[r.session])
    for chain in sessions.values():
        chain.sort(key=lambda q: q.turn)
    return out


class Replayer:
    """Sends every chain on its own schedule over one pooled client; never waits on others."""

    def __init__(self, config: ReplayConfig, requests: Sequence[BenchRequest]) -> None:
        self.config = config
        self.requests = list(requests)
        self.bodies = {r.rid: request_body(r, config.model) for r in self.requests}
        self.outcomes: dict[int, Outcome] = {}
        self._t0 = 0.0
        self._sent = 0

    async def run(self) -> list[Outcome]:
        """Replay everything; requests unfinished at the deadline are counted as errors."""
        cfg = self.config
        limits = httpx.Limits(
            max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections
        )
        timeout = httpx.Timeout(cfg.request_timeout_s, connect=10.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as c:
            loop = asyncio.get_running_loop()
            self._t0 = loop.time() + 0.2
            tasks = [asyncio.create_task(self._chain(c, chain)) for chain in chains(self.requests)]
            try:
                await asyncio.wait(tasks, timeout=cfg.deadline_s)
            finally:  # the deadline passed, or we are being cancelled (Ctrl-C)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        for r in self.requests:
            outcome = self.outcomes.setdefault(r.rid, Outcome(r.rid, float("nan")))
            if outcome.error is None and outcome.e2e is None:
                outcome.error = "deadline: not sent before the replay deadline passed"
        return [self.outcomes[r.rid] for r in self.requests]

    async def _chain(self, client: httpx.AsyncClient, chain: list[BenchRequest]) -> None:
        loop = asyncio.get_running_loop()
        scale = self.config.time_scale
        due = self._t0 + chain[0].at * scale
        for i, request in enumerate(chain):
            if i:
                due = loop.time() + request.think * scale
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            outcome = Outcome(request.rid, due - self._t0)
            outcome.gateway = self._sent % len(self.config.base_urls)
            self._sent += 1
            self.outcomes[request.rid] = outcome
            await self._send(client, request, outcome, due)

    async def _send(
        self, client: httpx.AsyncClient, request: BenchRequest, out: Outcome, due: float
    ) -> None:
        loop = asyncio.get_running_loop()
        out.lag = loop.time() - due
        headers = {"content-type": "application/json"}
        url = self.config.base_urls[out.gateway] + "/v1/chat/completions"
        try:
            async with client.stream(
                "POST", url, content=self.bodies[request.rid], headers=headers
            ) as response:
                out.status = response.status_code
                out.backend = response.headers.get(BACKEND_HEADER)
                if response.status_code != 200:
                    body = await response.aread()
                    out.error = f"HTTP {response.status_code}: {body[:200]!r}"
                    return
                await self._read_stream(response, out, due)
        except httpx.HTTPError as exc:
            out.error = f"{type(exc).__name__}: {exc}"[:300]
            if isinstance(exc, httpx.TimeoutException) and out.ttft is None:
                out.waited = loop.time() - due
        except asyncio.CancelledError:
            out.error = "deadline: cancelled when the replay deadline passed"
            if out.ttft is None:
                out.waited = loop.time() - due
            raise

    async def _read_stream(self, response: httpx.Response, out: Outcome, due: float) -> None:
        loop = asyncio.get_running_loop()
        done = False
        gaps: list[float] = []
        last = 0.0
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            if out.ttft is not None and '"usage":{' not in payload and '"error"' not in payload:
                now = loop.time()  # a content chunk after the first: one inter-token gap
                gaps.append(now - last)
                last = now
                continue
            event = orjson.loads(payload)
            if "error" in event:
                out.error = f"stream error: {str(event['error'])[:200]}"
                return
            if out.ttft is None and _has_content(event):
                last = loop.time()
                out.ttft = last - due
            usage = event.get("usage")
            if isinstance(usage, dict):
                out.prompt_tokens = usage.get("prompt_tokens")
                details = usage.get("prompt_tokens_details") or {}
                out.cached_tokens = details.get("cached_tokens")
        out.gaps = gaps
        if not done:
            out.error = "stream ended without [DONE]"
        elif out.ttft is None:
            out.error = "stream had no content"
        else:
            out.e2e = loop.time() - due


def _has_content(event: dict[str, object]) -> bool:
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    first = choices[0]
    if not isinstance(first, dict):
        return False
    delta = first.get("delta")
    return isinstance(delta, dict) and bool(delta.get("content"))
