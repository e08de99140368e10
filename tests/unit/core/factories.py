"""Small builders shared by the core unit tests."""

from __future__ import annotations

from typing import Any

from gateway.fleet.registry import Backend
from gateway.routing.types import RouteRequest
from gateway.settings import BackendSettings

MODEL = "m"


def make_backend(backend_id: str, **settings: Any) -> Backend:
    """A vLLM backend serving MODEL unless told otherwise."""
    fields: dict[str, Any] = {
        "id": backend_id,
        "url": f"http://{backend_id}.test:8000",
        "models": [MODEL],
    }
    fields.update(settings)
    return Backend.from_settings(BackendSettings(**fields))


def route(
    prompt_tokens: float = 6400.0,
    total_blocks: int = 100,
    block_tokens: float = 64.0,
    matches: dict[str, int] | None = None,
    model: str = MODEL,
    group_in_flight: int = 0,
) -> RouteRequest:
    """A routing request of 100 blocks of 64 tokens by default."""
    return RouteRequest(
        model=model,
        prompt_tokens=prompt_tokens,
        total_blocks=total_blocks,
        block_tokens=block_tokens,
        matches=matches or {},
        group_in_flight=group_in_flight,
    )
