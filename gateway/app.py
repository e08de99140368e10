"""The ASGI application: raw handlers for the hot inference routes, FastAPI for the rest."""

from __future__ import annotations

import logging
import os

from gateway.api.asgi import Message, Receive, Scope, Send, request_id_for, send_error
from gateway.api.inference import InferenceEndpoint
from gateway.api.ops import build_ops_app
from gateway.deps import Deps, build_deps
from gateway.errors import GatewayError
from gateway.metrics import ServerMetrics
from gateway.server.limits import ClientLimits
from gateway.server.runtime import Runtime
from gateway.settings import CONFIG_ENV, GatewaySettings, load_settings

log = logging.getLogger("gateway")

ALLOW_POST = (b"allow", b"POST")


class GatewayApp:
    """Dispatches by path; owns the lifespan of the dependency container."""

    def __init__(self, deps: Deps | Runtime, config_path: str | None = None) -> None:
        self.runtime = deps if isinstance(deps, Runtime) else Runtime(deps, config_path)
        self.server_metrics = ServerMetrics(self.runtime.deps.metrics.registry)
        self.client_limits = ClientLimits.from_settings(self.runtime.deps.settings.server)
        self._hot = {
            "/v1/chat/completions": InferenceEndpoint("chat", self.runtime, self.server_metrics),
            "/v1/completions": InferenceEndpoint("completion", self.runtime, self.server_metrics),
        }
        self._ops = build_ops_app(self.runtime)
        self._ops_errors = self.server_metrics.unexpected_errors.labels("ops")

    def count_refusal(self, reason: str) -> None:
        """Count a connection or request the HTTP server refused."""
        self.server_metrics.refused.labels(reason).inc()

    @property
    def deps(self) -> Deps:
        """The container serving now (a reload swaps it)."""
        return self.runtime.deps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self._hot.get(scope["path"])
            if handler is not None:
                if scope["method"] == "POST":
                    await handler(scope, receive, send)
                else:
                    await self._not_allowed(scope, send)
                return
            await self._ops_with_boundary(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._ops(scope, receive, send)

    @staticmethod
    async def _not_allowed(scope: Scope, send: Send) -> None:
        error = GatewayError(405, f"Method {scope['method']} is not allowed on {scope['path']}")
        await send_error(send, error, [ALLOW_POST, (b"x-request-id", request_id_for(scope))])

    async def _ops_with_boundary(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ops app, with one boundary: a surprise is logged, counted, answered as a 500."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._ops(scope, receive, tracking_send)
        except Exception:
            request_id = request_id_for(scope)
            log.exception("unexpected error on %s (request %s)", scope["path"], request_id)
            self._ops_errors.inc()
            if not started:
                error = GatewayError(500, "The gateway failed unexpectedly.")
                await send_error(send, error, [(b"x-request-id", request_id)])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runtime.start()
                except Exception as exc:  # report any start failure to the server, then stop
                    log.exception("gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                log.info("gateway ready with %d backends", len(self.deps.fleet.backends))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(
    settings: GatewaySettings, deps: Deps | None = None, config_path: str | None = None
) -> GatewayApp:
    """Build the gateway's ASGI app from settings (or from a hand-assembled container)."""
    return GatewayApp(deps if deps is not None else build_deps(settings), config_path)


def create_app_from_env() -> GatewayApp:
    """App factory for worker processes: the config file named by `$GATEWAY_CONFIG`."""
    path = os.environ[CONFIG_ENV]
    return create_app(load_settings(path), config_path=path)
