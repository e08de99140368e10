"""The ASGI application: raw handlers for the hot inference routes, FastAPI for the rest."""

from __future__ import annotations

import logging
import os

from gateway.api.asgi import Receive, Scope, Send
from gateway.api.inference import InferenceEndpoint
from gateway.api.ops import build_ops_app
from gateway.deps import Deps, build_deps
from gateway.settings import CONFIG_ENV, GatewaySettings, load_settings

log = logging.getLogger("gateway")


class GatewayApp:
    """Dispatches by path; owns the lifespan of the dependency container."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._hot = {
            "/v1/chat/completions": InferenceEndpoint("chat", deps),
            "/v1/completions": InferenceEndpoint("completion", deps),
        }
        self._ops = build_ops_app(deps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._hot.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._ops(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.deps.start()
                except Exception as exc:  # report any start failure to the server, then stop
                    log.exception("gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                log.info("gateway ready with %d backends", len(self.deps.fleet.backends))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.deps.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: GatewaySettings, deps: Deps | None = None) -> GatewayApp:
    """Build the gateway's ASGI app from settings (or from a hand-assembled container)."""
    return GatewayApp(deps if deps is not None else build_deps(settings))


def create_app_from_env() -> GatewayApp:
    """App factory for worker processes: the config file named by `$GATEWAY_CONFIG`."""
    return create_app(load_settings(os.environ[CONFIG_ENV]))
