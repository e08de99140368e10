"""The usage a backend reported: found in a stream's events or a whole body, read once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.proxy.sse import EVENT_END, data_payload

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts from `usage` (None where the engine left a field out)."""

    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def parse_usage(payload: bytes, absent_means_zero: bool = False) -> Usage | None:
    """The `usage` of a JSON response or stream chunk, if it has one.

    vLLM omits `cached_tokens` when it is zero, and every engine omits it when reporting is
    off; so a usage block without it means zero only for a backend known to report
    (`absent_means_zero`).
    """
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    if cached is None and absent_means_zero and prompt is not None:
        cached = 0
    return Usage(prompt, _count(usage.get("completion_tokens")), cached)


def take_usage_event(block: bytes, strip: bool) -> tuple[bytes, bytes | None]:
    """Find the usage-only event (`choices: []` with a `usage` object) in complete SSE events.

    Returns the block (without that event when `strip`: the gateway asked for usage the
    client did not) and the event's JSON payload, if any. Blocks without a usage object, the
    common case, are returned untouched after one scan.
    """
    if _USAGE_OBJECT.search(block) is None:
        return block, None
    found: bytes | None = None
    kept: list[bytes] = []
    start = 0
    for end in EVENT_END.finditer(block):
        event = block[start : end.end()]
        start = end.end()
        payload = data_payload(event)
        if payload is not None and _USAGE_OBJECT.search(payload):
            found = payload
            if strip and _EMPTY_CHOICES.search(payload):
                continue
        kept.append(event)
    kept.append(block[start:])
    return (b"".join(kept) if strip else block), found
