"""One simulated model server as a raw ASGI application (engine routes plus /sim admin)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gateway.sim.asgi import JSON, PROMETHEUS, Receive, Scope, Send, read_body, respond
from gateway.sim.config import SimBackendConfig, SimFaults
from gateway.sim.engine import EngineStats, SimEngine
from gateway.sim.flavors import VllmFlavor, make_flavor
from gateway.sim.generation import GenerationHandler
from gateway.sim.request import SimRequestError, parse_tokenize

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class SimBackend:
    """A simulated vLLM/SGLang/TGI server: config, run-time faults, engine state, ASGI app.

    Waiting helpers: `wait_for_cancelled(n, timeout)` and `wait_for(predicate, timeout)` block
    the calling thread (use them from a test thread while the backend runs in another thread's
    loop); `await wait_cancelled(n, timeout)` does the same from any event loop.
    """

    def __init__(self, config: SimBackendConfig, faults: SimFaults | None = None) -> None:
        self.config = config
        self.faults = faults if faults is not None else SimFaults()
        self.engine = SimEngine(config)
        self.flavor = make_flavor(config)
        self._rng = random.Random(config.seed)
        self._generation = GenerationHandler(
            config, self.faults, self.engine, self.flavor, self._rng
        )
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("GET", "/v1/models"): self._models,
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/sim/stats"): self._stats,
            ("GET", "/sim/faults"): self._get_faults,
            ("POST", "/sim/faults"): self._set_faults,
            ("POST", "/sim/restart"): self._restart,
        }
        if config.flavor == "sglang":
            self._routes[("GET", "/health_generate")] = self._health
        if config.flavor == "vllm":
            self._routes[("POST", "/tokenize")] = self._tokenize
        if self.flavor.cache_reset_path is not None:
            self._routes[("POST", self.flavor.cache_reset_path)] = self._reset_cache
        self._known_paths = {path for _, path in self._routes}

    @property
    def backend_id(self) -> str:
        """The backend's id (sim-0, sim-1, ...)."""
        return self.config.backend_id

    @property
    def stats(self) -> EngineStats:
        """Live counters (read-only use from other threads)."""
        return self.engine.stats

    # ---- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI 3 entry point."""
        kind = scope["type"]
        if kind == "http":
            handler = self._routes.get((scope["method"], scope["path"]))
            if handler is None:
                handler = self._fallback
            await handler(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._generation.handle(receive, send, "chat")

    async def _completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._generation.handle(receive, send, "completion")

    async def _tokenize(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return
        try:
            prompt = parse_tokenize(body, self.engine.tokenizer)
        except SimRequestError as err:
            reply = self.flavor.request_error(err, 0)
            await respond(send, reply.status, reply.body, reply.content_type, reply.headers)
            return
        assert isinstance(self.flavor, VllmFlavor)
        await respond(send, 200, orjson.dumps(self.flavor.tokenize(prompt.token_ids)))

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, orjson.dumps(self.flavor.models()))

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.faults.loading:
            await respond(send, 200, b"", None)
        elif self.config.flavor == "tgi":
            body = orjson.dumps({"error": "unhealthy", "error_type": "healthcheck"})
            await respond(send, 503, body)
        else:
            await respond(send, 503, b"", None)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, self.flavor.metrics(self.engine), PROMETHEUS)

    async def _stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, orjson.dumps(self.snapshot()))

    async def _get_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, orjson.dumps(self.faults.to_dict()))

    async def _set_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return
        try:
            values = orjson.loads(body or b"{}")
            if not isinstance(values, dict):
                raise ValueError("body must be a JSON object")
            self.set_faults(**values)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            await respond(send, 400, orjson.dumps({"error": str(exc)}))
            return
        await respond(send, 200, orjson.dumps(self.faults.to_dict()))

    async def _restart(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.restart()
        await respond(send, 200, orjson.dumps({"epoch": self.engine.stats.epoch}))

    async def _reset_cache(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.engine.reset_cache(restart=False)
        await respond(send, 200, b"", None)

    async def _fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["method"] == "GET":
            extra = self.flavor.extra_get(path, self.engine)
            if extra is not None:
                await respond(send, 200, orjson.dumps(extra))
                return
        tgi = self.config.flavor == "tgi"
        if path in self._known_paths:
            body = b"" if tgi else b'{"detail":"Method Not Allowed"}'
            await respond(send, 405, body, None if tgi else JSON)
        else:
            body = b"" if tgi else b'{"detail":"Not Found"}'
            await respond(send, 404, body, None if tgi else JSON)

    # ---- control and observation ----------------------------------------------------------
    def set_faults(self, **values: Any) -> None:
        """Update fault switches; `reset=True` first restores the defaults."""
        if values.pop("reset", False):
            self.faults.update(SimFaults().to_dict())
        self.faults.update(values)

    def restart(self) -> None:
        """Simulate an engine restart: empty prefix cache, next epoch."""
        self.engine.reset_cache(restart=True)

    def snapshot(self) -> dict[str, Any]:
        """Counters, cache state, config and faults as one JSON-ready dict."""
        engine = self.engine
        return {
            "backend_id": self.config.backend_id,
            "flavor": self.config.flavor,
            "model": self.config.model,
            **engine.stats.to_dict(),
            "cache_blocks": len(engine.cache),
            "cache_evictions": engine.cache.evictions,
            "kv_usage": engine.kv_usage,
            "config": self.config.summary(),
            "faults": self.faults.to_dict(),
        }

    def wait_for(self, predicate: Callable[[EngineStats], bool], timeout: float) -> bool:
        """Block this thread until predicate(stats) holds; False on timeout."""
        return self.engine.wait_for(predicate, timeout)

    def wait_for_cancelled(self, n: int, timeout: float) -> bool:
        """Block this thread until cancelled_total >= n; False on timeout."""
        return self.engine.wait_for(lambda s: s.cancelled_total >= n, timeout)

    async def wait_cancelled(self, n: int, timeout_s: float) -> bool:
        """Await cancelled_total >= n from any event loop (waits in a worker thread)."""
        return await asyncio.to_thread(self.wait_for_cancelled, n, timeout_s)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
