"""Everything off the hot path: model listing, health, readiness, metrics, OpenAI-shaped 404s."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.admin import add_admin_routes
from gateway.api.openapi import merge_inference_schema
from gateway.errors import GatewayError
from gateway.fleet.breaker import BreakerState
from gateway.server.runtime import Runtime

log = logging.getLogger("gateway")


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def error_response(error: GatewayError, extra: dict[str, str] | None = None) -> Response:
    """An OpenAI-shaped error as a Starlette response."""
    headers = {k.decode(): v.decode() for k, v in error.headers() if k != b"content-type"}
    headers.update(extra or {})
    return Response(error.body(), error.status, headers, media_type="application/json")


def build_ops_app(runtime: Runtime) -> FastAPI:
    """The FastAPI app serving every route except the two inference routes."""
    app = FastAPI(title="prefix-gateway", docs_url=None, redoc_url=None)
    created = int(time.time())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            message = f"Unknown route: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(GatewayError(exc.status_code, message), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(GatewayError(400, f"Invalid request: {exc.errors()[:1]}"))

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # The app's boundary logs and counts it; this renders it in OpenAI's shape.
        return error_response(GatewayError(500, "The gateway failed unexpectedly."))

    @app.get("/v1/models")
    async def list_models() -> Response:
        data = [
            {
                "id": model,
                "object": "model",
                "created": created,
                "owned_by": "prefix-gateway",
                "max_model_len": max_context,
            }
            for model, max_context in sorted(runtime.deps.fleet.models().items())
        ]
        return _json({"object": "list", "data": data})

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        deps = runtime.deps
        backends = deps.fleet.backends
        healthy = sum(1 for b in backends if b.state.healthy)
        # Usable: passes health checks and its circuit is not open (half-open is on its way back).
        now = time.monotonic()
        usable = sum(
            1
            for b in backends
            if b.state.healthy and b.state.breaker.state(now) is not BreakerState.OPEN
        )
        draining = runtime.lifecycle.draining
        ready = deps.started and not draining and usable > 0
        body = {
            "ready": ready,
            "draining": draining,
            "backends": len(backends),
            "healthy_backends": healthy,
            "usable_backends": usable,
        }
        return _json(body, 200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        deps = runtime.deps
        for backend in deps.fleet.backends:
            deps.metrics.backend_in_flight.labels(backend.id).set(backend.state.in_flight)
        payload, content_type = deps.metrics.exposition()
        return Response(payload, media_type=content_type)

    add_admin_routes(app, runtime)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version="1", routes=app.routes)
            app.openapi_schema = merge_inference_schema(schema, sorted(runtime.deps.fleet.models()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
