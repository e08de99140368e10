"""Small builders shared by the core unit tests."""

from __future__ import annotations

from typing import Any

from gateway.fleet.registry import Backend
from gateway.routing.types import RouteRequest
from gateway.settings import BackendSettings

MODEL = "m"
CONFIGURED_BYTES_PER_TOKEN = 4.0


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
    output_tokens: float | None = None,
) -> RouteRequest:
    """A routing request of 100 blocks of 64 tokens by default.

    Sizes are given in tokens at the backends' configured 4 bytes per token.
    """
    return RouteRequest(
        model=model,
        prompt_bytes=prompt_tokens * CONFIGURED_BYTES_PER_TOKEN,
        total_blocks=total_blocks,
        block_bytes=int(block_tokens * CONFIGURED_BYTES_PER_TOKEN),
        matches=matches or {},
        group_in_flight=group_in_flight,
        output_tokens=output_tokens,
    )
