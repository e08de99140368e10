"""The OpenAI inference routes as raw ASGI handlers: parse, route, forward, account."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.access_log import RequestRecord, error_reason
from gateway.admission.keys import Principal
from gateway.admission.limits import used_tokens
from gateway.admission.queue import with_room_first
from gateway.admission.stage import refusal
from gateway.admission.tiers import Tier
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
from gateway.api.request import BodyLimits, InferenceRequest, RequestKind, parse_request
from gateway.deps import Deps
from gateway.errors import GatewayError
from gateway.metrics import ServerMetrics
from gateway.placement import Placement
from gateway.proxy.forward import ProxyOutcome
from gateway.routing.filters import Unroutable
from gateway.server.runtime import Runtime
from gateway.settings import ServerSettings

log = logging.getLogger("gateway")

CLIENT_CLOSED = 499


def shutting_down() -> GatewayError:
    """The 503 (or in-band error) of a request that a drain outlived."""
    return GatewayError(
        503,
        "The gateway is shutting down; retry the request.",
        code="shutting_down",
        retry_after_s=1,
    )


class InferenceEndpoint:
    """`POST /v1/chat/completions` or `POST /v1/completions`."""

    def __init__(self, kind: RequestKind, runtime: Runtime, server: ServerMetrics) -> None:
        self._kind: RequestKind = kind
        self._runtime = runtime
        self._lifecycle = runtime.lifecycle
        deps = runtime.deps
        self._metrics = deps.metrics.route(kind)
        self._disconnects = deps.metrics.client_disconnects.labels(kind)
        self._unexpected = server.unexpected_errors.labels(kind)
        self._limits_of: ServerSettings | None = None
        self._limits = BodyLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        deps = self._runtime.deps  # this request keeps this container, whatever reloads do
        request_id = request_id_for(scope)
        outcome = ProxyOutcome(trace=deps.tracing.begin(scope))
        record = RequestRecord(request_id, self._kind, started)
        ticket = self._lifecycle.enter()
        stream = False
        reason = "ok"
        try:
            server = deps.settings.server
            principal = deps.gate.authenticate(header_value(scope, b"authorization"))
            body = await read_body(scope, receive, server.max_body_bytes)
            limits = self._limits if server is self._limits_of else self._body_limits(server)
            request = parse_request(self._kind, body, request_id, limits)
            stream = request.stream
            await self._forward(deps, scope, principal, request, receive, send, outcome, record)
            status = outcome.status if outcome.finished else CLIENT_CLOSED
            if outcome.broken:
                reason = "stream_broken"
        except GatewayError as error:
            await send_error(send, error, self._error_headers(request_id, outcome))
            status = error.status
            reason = error_reason(error, outcome)
        except ClientGone:
            status = CLIENT_CLOSED
        except asyncio.CancelledError:
            if not self._lifecycle.was_aborted(ticket):
                raise
            # A drain outlived this request: end it in-band (a stream) or with a 503.
            ticket.uncancel()
            status = await self._end(send, shutting_down(), request_id, outcome, stream)
            reason = "shutting_down"
        except Exception:  # the boundary: a surprise still gets an OpenAI-shaped answer
            log.exception("unexpected error on request %s", request_id.decode())
            self._unexpected.inc()
            failure = GatewayError(500, "The gateway failed unexpectedly on this request.")
            status = await self._end(send, failure, request_id, outcome, stream)
            reason = "internal_error"
        finally:
            self._lifecycle.leave(ticket)
        if status == CLIENT_CLOSED:
            self._disconnects.inc()
            reason = "client_closed"
        if outcome.first_byte_at is not None:
            self._metrics.ttft.observe(outcome.first_byte_at - started)
        self._metrics.finished(status, time.perf_counter() - started)
        outcome.trace.finish(status, outcome)
        deps.ledger.close(record, outcome, status, reason)

    def _body_limits(self, server: ServerSettings) -> BodyLimits:
        """The JSON limits of `server` (built again only when a reload changed the section)."""
        self._limits = BodyLimits(server.max_json_depth, server.max_messages)
        self._limits_of = server
        return self._limits

    @staticmethod
    def _error_headers(request_id: bytes, outcome: ProxyOutcome) -> list[tuple[bytes, bytes]]:
        extra = [(b"x-request-id", request_id), *outcome.extra_headers]
        if outcome.backend is not None:
            extra.append((b"x-gateway-backend", outcome.backend.id_bytes))
        return extra

    async def _end(
        self,
        send: Send,
        error: GatewayError,
        request_id: bytes,
        outcome: ProxyOutcome,
        stream: bool,
    ) -> int:
        """Answer `error` before the response started, in-band in a stream that did."""
        try:
            if outcome.first_byte_at is None:
                await send_error(send, error, self._error_headers(request_id, outcome))
            elif stream:
                event = {"type": "http.response.body", "body": error.sse_event()}
                await send({**event, "more_body": False})
            else:
                return CLIENT_CLOSED  # a whole body was under way: the connection closes
        except Exception:  # the client is gone or the response already complete
            return CLIENT_CLOSED
        return error.status

    async def _forward(
        self,
        deps: Deps,
        scope: Scope,
        principal: Principal,
        request: InferenceRequest,
        receive: Receive,
        send: Send,
        outcome: ProxyOutcome,
        record: RequestRecord,
    ) -> None:
        tier = deps.gate.tier(principal, request.data)
        trace = outcome.trace
        trace.admission(request, principal.tenant, tier.name)
        record.tenant = principal.tenant
        record.tier = tier.name
        record.stream = request.stream
        access_log = deps.ledger.access_log
        if access_log is not None and access_log.include_prompt:
            data = request.data
            record.prompt = data.get("messages") if request.kind == "chat" else data.get("prompt")
        outcome.extra_headers.append((b"x-gateway-tier", tier.header))
        candidates = deps.fleet.serving(request.model)
        if not candidates:
            raise GatewayError(
                404,
                f"The model `{request.model}` does not exist.",
                param="model",
                code="model_not_found",
            )
        record.model = request.model  # a served model: a bounded label
        try:
            candidates = tier.pools.keep_backends(candidates)
        except Unroutable as refused:
            raise refusal(refused) from None
        request.engine_priority = tier.settings.engine_priority
        gate = deps.gate
        limits = gate.limits_of(principal.tenant, tier)
        if limits is None:
            trace.admitted(None)
            placement = await trace.routed(deps.placer.place(request, candidates))
            record.lane = deps.lanes.of(placement.route, candidates)
            await self._proxy(
                deps, scope, principal, request, placement, tier, receive, send, outcome
            )
            return
        size = await deps.placer.size(request, candidates)
        reserved = gate.reserved_tokens(
            size.key.rendered_bytes,
            request.max_tokens,
            request.model,
            candidates,
            size.exact_tokens,
        )
        lease = request.request_id.decode()
        placing = trace.routed(deps.placer.place(request, candidates, size))
        verdict, placement = await gate.admit(
            principal.tenant, tier, limits, reserved, lease, placing
        )
        trace.admitted(verdict)
        outcome.extra_headers.extend(verdict.headers())
        record.lane = deps.lanes.of(placement.route, candidates)
        if not verdict.allowed:
            raise verdict.error()
        try:
            await self._proxy(
                deps, scope, principal, request, placement, tier, receive, send, outcome
            )
        finally:
            delta = used_tokens(outcome, reserved) - reserved
            await gate.finish(principal.tenant, limits, lease, delta)  # no network wait

    async def _proxy(
        self,
        deps: Deps,
        scope: Scope,
        principal: Principal,
        request: InferenceRequest,
        placement: Placement,
        tier: Tier,
        receive: Receive,
        send: Send,
        outcome: ProxyOutcome,
    ) -> None:
        ranked = placement.decision.ranked
        routing = deps.settings.routing
        if routing.explain or (
            routing.explain_header and header_value(scope, b"x-gateway-explain") == b"1"
        ):
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
        queue = deps.gate.queue
        try:
            settings = tier.settings
            if not queue.has_room(ranked, settings.rank):
                waiting = queue.wait(
                    tier.name,
                    settings.rank,
                    principal.tenant,
                    ranked,
                    settings.max_queue_wait_s,
                    settings.reject_status,
                )
                await outcome.trace.queued(waiting)
                queue.started()  # forward() counts it on its backend before its first await
                ranked = with_room_first(ranked)
            await deps.forwarder.forward(
                request, ranked, send, outcome, placement, limits=tier.limits
            )
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
        finally:
            watcher.cancel()
            queue.wake()
        placement.finished(outcome)
