"""The OpenAI inference routes as raw ASGI handlers: parse, route, forward, account."""

from __future__ import annotations

import asyncio
import time

from gateway.api.asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    header_value,
    read_body,
    request_id_for,
    send_error,
)
from gateway.api.request import InferenceRequest, RequestKind, parse_request
from gateway.deps import Deps
from gateway.errors import GatewayError
from gateway.proxy.forward import ProxyOutcome

CLIENT_CLOSED = 499


class InferenceEndpoint:
    """`POST /v1/chat/completions` or `POST /v1/completions`."""

    def __init__(self, kind: RequestKind, deps: Deps) -> None:
        self._kind: RequestKind = kind
        self._deps = deps
        self._metrics = deps.metrics.route(kind)
        self._disconnects = deps.metrics.client_disconnects.labels(kind)
        self._limit = deps.settings.server.max_body_bytes
        self._explain_all = deps.settings.routing.explain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = request_id_for(scope)
        outcome = ProxyOutcome()
        try:
            body = await read_body(scope, receive, self._limit)
            request = parse_request(self._kind, body, request_id)
            await self._forward(scope, request, receive, send, outcome)
            status = outcome.status if outcome.finished else CLIENT_CLOSED
        except GatewayError as error:
            extra = [(b"x-request-id", request_id)]
            if outcome.backend is not None:
                extra.append((b"x-gateway-backend", outcome.backend.id_bytes))
            await send_error(send, error, extra)
            status = error.status
        except ClientGone:
            status = CLIENT_CLOSED
        if status == CLIENT_CLOSED:
            self._disconnects.inc()
        if outcome.first_byte_at is not None:
            self._metrics.ttft.observe(outcome.first_byte_at - started)
        self._metrics.finished(status, time.perf_counter() - started)

    async def _forward(
        self,
        scope: Scope,
        request: InferenceRequest,
        receive: Receive,
        send: Send,
        outcome: ProxyOutcome,
    ) -> None:
        candidates = self._deps.fleet.serving(request.model)
        if not candidates:
            raise GatewayError(
                404,
                f"The model `{request.model}` does not exist.",
                param="model",
                code="model_not_found",
            )
        placement = await self._deps.placer.place(request, candidates)
        ranked = placement.decision.ranked
        if self._explain_all or header_value(scope, b"x-gateway-explain") == b"1":
            outcome.extra_headers.append(
                (b"x-gateway-route", placement.decision.explain().encode())
            )
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch_disconnect() -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not outcome.finished:
                        gone = True
                        task.cancel()
                    return

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await self._deps.forwarder.forward(request, ranked, send, outcome, placement)
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
        finally:
            watcher.cancel()
        placement.finished(outcome)
