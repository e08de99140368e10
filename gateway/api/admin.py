"""Admin routes: reload the config, drain a backend; behind `server.admin_key`, else absent."""

from __future__ import annotations

import hmac

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from gateway.errors import GatewayError
from gateway.server.runtime import Runtime


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _authorized(request: Request, key: bytes) -> bool:
    """The request carries `Authorization: Bearer <admin key>` (compared in constant time)."""
    given = request.headers.get("authorization", "").encode()
    return hmac.compare_digest(given, b"Bearer " + key)


def add_admin_routes(app: FastAPI, runtime: Runtime) -> None:
    """`POST /admin/reload`, `POST /admin/backends/{id}/drain` and `.../undrain`."""

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
