"""Reading SSE events from a streamed httpx response in tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson


def events(response: httpx.Response) -> Iterator[str]:
    """The `data:` payloads of an SSE response, in order (comments skipped)."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield line[5:].lstrip(" ")


def parsed(payloads: list[str]) -> list[Any]:
    """JSON-decoded payloads, `[DONE]` kept as the string."""
    return [p if p == "[DONE]" else orjson.loads(p) for p in payloads]
