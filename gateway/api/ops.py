"""Everything off the hot path: model listing, health, readiness, metrics, OpenAI-shaped 404s."""

from __future__ import annotations

import time

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.deps import Deps
from gateway.errors import GatewayError


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error_response(error: GatewayError) -> Response:
    headers = {k.decode(): v.decode() for k, v in error.headers() if k != b"content-type"}
    return Response(error.body(), error.status, headers, media_type="application/json")


def build_ops_app(deps: Deps) -> FastAPI:
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
        return _error_response(GatewayError(exc.status_code, message))

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
            for model, max_context in sorted(deps.fleet.models().items())
        ]
        return _json({"object": "list", "data": data})

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        backends = deps.fleet.backends
        healthy = sum(1 for b in backends if b.state.healthy)
        body = {"ready": deps.started, "backends": len(backends), "healthy_backends": healthy}
        return _json(body, 200 if deps.started else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        for backend in deps.fleet.backends:
            deps.metrics.backend_in_flight.labels(backend.id).set(backend.state.in_flight)
        payload, content_type = deps.metrics.exposition()
        return Response(payload, media_type=content_type)

    return app
