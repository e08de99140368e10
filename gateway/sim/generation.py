"""Generation request flow of one simulated backend: faults, prefill queue, decode, replies."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from types import MappingProxyType

import orjson

from gateway.sim.asgi import JSON, Message, Receive, Send, read_body, respond
from gateway.sim.config import SimBackendConfig, SimFaults
from gateway.sim.engine import Outcome, SimEngine, Ticket
from gateway.sim.flavors import ErrorReply, Flavor, ResponseMeta, Usage
from gateway.sim.flavors.base import DONE, sse
from gateway.sim.request import ErrorKind, RequestKind, SimRequest, SimRequestError, parse_request
from gateway.sim.tokens import VOCABULARY, block_hashes_packed, output_text, output_word_index

_FIRST_PIECES = tuple(orjson.dumps(word) for word in VOCABULARY)
_NEXT_PIECES = tuple(orjson.dumps(" " + word) for word in VOCABULARY)
_EARLY_FAULTS: Mapping[str, tuple[ErrorKind, str]] = MappingProxyType(
    {
        "error": (ErrorKind.SERVER_ERROR, "Internal server error (simulated fault)"),
        "429": (ErrorKind.OVERLOADED, "Too many requests (simulated fault)"),
        "503": (ErrorKind.UNAVAILABLE, "Service unavailable (simulated fault)"),
    }
)
_MIDSTREAM_MESSAGE = "Engine error during generation (simulated fault)"
_MIDSTREAM_FAULTS = ("abort_midstream", "midstream_error")


class _Call:
    """One request in flight: what to send, where, and its connection state."""

    __slots__ = ("delay", "disconnected", "fault", "finished", "meta", "req", "send", "ticket")

    def __init__(
        self,
        send: Send,
        req: SimRequest,
        meta: ResponseMeta,
        ticket: Ticket,
        fault: str | None,
        delay: float,
    ) -> None:
        self.send = send
        self.req = req
        self.meta = meta
        self.ticket = ticket
        self.fault = fault
        self.delay = delay
        self.disconnected = False  # set by the watcher when the client went away
        self.finished = False  # set before the last write: a later disconnect is no cancel


class GenerationHandler:
    """Serves POST /v1/chat/completions and /v1/completions for one backend."""

    def __init__(
        self,
        config: SimBackendConfig,
        faults: SimFaults,
        engine: SimEngine,
        flavor: Flavor,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.faults = faults
        self.engine = engine
        self.flavor = flavor
        self.rng = rng
        sse_type = (
            b"text/event-stream" if config.flavor == "tgi" else b"text/event-stream; charset=utf-8"
        )
        self._sse_headers = [(b"content-type", sse_type), (b"cache-control", b"no-cache")]

    async def handle(self, receive: Receive, send: Send, kind: RequestKind) -> None:
        """Serve one generation request end to end."""
        body = await read_body(receive)
        if body is None:
            return
        engine = self.engine
        ticket = engine.open()
        try:
            if self.faults.loading:
                raise SimRequestError(ErrorKind.UNAVAILABLE, "The model is still loading")
            req = parse_request(body, kind, self.config, engine.tokenizer)
            fault = self._pick_fault(req)
            early = _EARLY_FAULTS.get(fault) if fault is not None else None
            if early is not None:
                raise SimRequestError(*early)
        except SimRequestError as err:
            engine.close(ticket, "error")
            await self._send_error(send, self.flavor.request_error(err, self.faults.retry_after_s))
            return
        meta = ResponseMeta(
            kind,
            self.flavor.request_id(kind, self.rng),
            int(time.time()),
            req.model,
            usage_follows=req.stream and req.include_usage,
        )
        delay = req.fault_delay_s if fault == "slow_first_token" else self.faults.slow_first_token_s
        task = asyncio.current_task()
        assert task is not None
        call = _Call(send, req, meta, ticket, fault, delay)
        watcher = None
        if delay or not engine.zero_latency:  # zero latency: nothing to wait for, no watcher
            watcher = asyncio.create_task(_watch_disconnect(receive, call, task))
        try:
            await (self._stream(call) if req.stream else self._whole(call))
        except asyncio.CancelledError:
            engine.close(ticket, "cancelled")
            if not call.disconnected:
                raise
            task.uncancel()
        except BaseException:
            engine.close(ticket, "error")
            raise
        finally:
            if watcher is not None:
                watcher.cancel()

    def _pick_fault(self, req: SimRequest) -> str | None:
        if req.sim_fault is not None or not self.faults.any_rate:
            return req.sim_fault
        f = self.faults
        rand = self.rng.random
        for name, rate in (
            ("error", f.error_rate),
            ("429", f.status_429_rate),
            ("503", f.status_503_rate),
            ("abort_midstream", f.abort_midstream_rate),
            ("midstream_error", f.midstream_error_rate),
        ):
            if rate > 0 and rand() < rate:
                return name
        return None

    async def _send_error(self, send: Send, reply: ErrorReply) -> None:
        await respond(send, reply.status, reply.body, reply.content_type, reply.headers)

    async def _prefill(self, call: _Call) -> int:
        prompt = call.req.prompt
        hashes = block_hashes_packed(prompt.packed, self.config.block_size)
        cached = await self.engine.prefill(
            call.ticket, prompt.n_tokens, hashes, call.req.max_tokens
        )
        if call.delay:
            await asyncio.sleep(call.delay)
        return cached

    async def _stream(self, call: _Call) -> None:
        req, send, stats = call.req, call.send, self.engine.stats
        await send({"type": "http.response.start", "status": 200, "headers": self._sse_headers})
        cached = await self._prefill(call)
        tgi = self.config.flavor == "tgi"
        prefix = b"data:" if tgi and self.faults.tgi_no_space else b"data: "
        keepalive = b":\n\n" if tgi and self.faults.tgi_keepalive else b""
        tpl = self.flavor.stream_template(call.meta, req.finish_reason, prefix)
        n = req.max_tokens
        limit = n // 2 if call.fault in _MIDSTREAM_FAULTS else n
        engine, ticket = self.engine, call.ticket
        digest = req.prompt.digest
        buf: list[bytes] = [tpl.first] if tpl.first is not None else []
        sent = 0
        produced = ticket.generated
        while sent < limit:
            if sent >= produced:  # flush what exists, then wait for the engine's next tokens
                if buf:
                    await send(_body(b"".join(buf), more=True))
                    buf.clear()
                produced = await engine.decode(ticket, produced)
            for i in range(sent, min(produced, limit)):
                if keepalive:
                    buf.append(keepalive)
                piece = (_NEXT_PIECES if i else _FIRST_PIECES)[output_word_index(digest, i)]
                buf.append(tpl.token_event(piece, i == n - 1))
            stats.generation_tokens_total += min(produced, limit) - sent
            sent = min(produced, limit)
        await self._end_stream(call, buf, prefix, cached)

    async def _end_stream(self, call: _Call, buf: list[bytes], prefix: bytes, cached: int) -> None:
        req, engine = call.req, self.engine
        if call.fault == "abort_midstream":
            if buf:
                await call.send(_body(b"".join(buf), more=True))
            call.finished = True
            engine.close(call.ticket, "aborted")
            return  # response left incomplete: the server closes the connection
        outcome: Outcome = "success"
        if call.fault == "midstream_error":
            buf.append(sse(prefix, orjson.dumps(self.flavor.stream_error(_MIDSTREAM_MESSAGE))))
            outcome = "error"
        elif req.include_usage:
            usage = Usage(req.prompt.n_tokens, req.max_tokens, cached)
            buf.append(sse(prefix, orjson.dumps(self.flavor.usage_chunk(call.meta, usage))))
        buf.append(sse(prefix, DONE))
        call.finished = True
        await call.send(_body(b"".join(buf), more=False))
        engine.close(call.ticket, outcome, req.finish_reason)

    async def _whole(self, call: _Call) -> None:
        req, engine, send = call.req, self.engine, call.send
        cached = await self._prefill(call)
        n = req.max_tokens
        await engine.finish(call.ticket, call.ticket.generated)
        engine.stats.generation_tokens_total += n
        call.finished = True
        if call.fault == "midstream_error":
            engine.close(call.ticket, "error")
            reply = self.flavor.error(ErrorKind.SERVER_ERROR, _MIDSTREAM_MESSAGE, 0)
            await self._send_error(send, reply)
            return
        usage = Usage(req.prompt.n_tokens, n, cached)
        text = output_text(req.prompt.digest, n)
        body = orjson.dumps(self.flavor.response(call.meta, text, req.finish_reason, usage))
        if call.fault == "abort_midstream":
            headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send(_body(body[: len(body) // 2], more=True))
            engine.close(call.ticket, "aborted")
            return
        await respond(send, 200, body, JSON, self.flavor.response_headers(usage))
        engine.close(call.ticket, "success", req.finish_reason)


def _body(data: bytes, *, more: bool) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def _watch_disconnect(receive: Receive, call: _Call, task: asyncio.Task[None]) -> None:
    """Cancel the request task as soon as the client disconnects before the end."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not call.finished:
                call.disconnected = True
                task.cancel()
            return
