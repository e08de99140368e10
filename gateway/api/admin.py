"""Admin routes: reload the config, drain a backend, show the backends, explain a routing
decision; behind `server.admin_key`, else absent."""

from __future__ import annotations

import hmac

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from gateway.admission.keys import Principal
from gateway.api.admin_views import backends_view, explain, request_kind
from gateway.errors import GatewayError
from gateway.server.runtime import Runtime

# The client key whose tenant and tiers an explained request is resolved with (optional).
CLIENT_KEY_HEADER = "x-gateway-client-key"


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _authorized(request: Request, key: bytes) -> bool:
    """The request carries `Authorization: Bearer <admin key>` (compared in constant time)."""
    given = request.headers.get("authorization", "").encode()
    return hmac.compare_digest(given, b"Bearer " + key)


def add_admin_routes(app: FastAPI, runtime: Runtime) -> None:
    """`POST /admin/reload`, `POST /admin/backends/{id}/drain` and `.../undrain`,
    `GET /admin/backends`, `POST /admin/explain`."""

    def check(request: Request) -> None:
        secret = runtime.deps.settings.server.admin_key
        if secret is None:
            raise GatewayError(404, f"Unknown route: {request.method} {request.url.path}")
        if not _authorized(request, secret.get_secret_value().encode()):
            raise GatewayError(401, "A valid admin key is required.", code="invalid_admin_key")

    @app.post("/admin/reload", include_in_schema=False)
    async def reload(request: Request) -> Response:
        check(request)
        result = await runtime.reload()
        body = {
            "reloaded": result.ok,
            "message": result.message,
            "added": list(result.added),
            "removed": list(result.removed),
        }
        return _json(body, 200 if result.ok else 422)

    async def set_drained(request: Request, backend_id: str, drained: bool) -> Response:
        check(request)
        if not await runtime.drain_backend(backend_id, drained):
            raise GatewayError(404, f"No backend `{backend_id}`.", param="backend_id")
        return _json({"backend": backend_id, "drained": drained})

    @app.post("/admin/backends/{backend_id}/drain", include_in_schema=False)
    async def drain(request: Request, backend_id: str) -> Response:
        return await set_drained(request, backend_id, True)

    @app.post("/admin/backends/{backend_id}/undrain", include_in_schema=False)
    async def undrain(request: Request, backend_id: str) -> Response:
        return await set_drained(request, backend_id, False)

    @app.get("/admin/backends", include_in_schema=False)
    async def backends(request: Request) -> Response:
        check(request)
        return _json(backends_view(runtime.deps, runtime.drained))

    @app.post("/admin/explain", include_in_schema=False)
    async def explain_route(request: Request) -> Response:
        check(request)
        deps = runtime.deps
        body = await request.body()
        if len(body) > deps.settings.server.max_body_bytes:
            raise GatewayError(413, "The request body is too large.", code="request_too_large")
        kind = request_kind(request.query_params.get("kind"), body)
        key = request.headers.get(CLIENT_KEY_HEADER)
        if key is not None:
            principal = deps.gate.authenticate(b"Bearer " + key.encode())
        elif deps.settings.auth.enabled:
            principal = Principal(deps.settings.auth.default_tenant, None, frozenset())
        else:
            principal = deps.gate.authenticate(None)
        return _json(await explain(deps, kind, body, principal))
