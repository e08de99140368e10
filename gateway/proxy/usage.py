"""The usage a backend reported: found in a stream's events or a whole body, read once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.proxy.sse import EVENT_END, data_payload

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')


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


class UsageReader:
    """Reads the usage chunk of a stream, and takes it out for a client that did not ask.

    Blocks without a usage object or a finish, the common case, pass after one scan each.
    When stripping, the stream must look as if the engine had not been asked for usage; an
    engine that was asked moves some top-level fields from the final chunk to the usage
    chunk (vLLM's `system_fingerprint`), so the chunk that finishes a choice is held back
    until the usage chunk shows what it lacks, and goes out with it.
    """

    __slots__ = ("_held", "_strip", "usage")

    def __init__(self, strip: bool) -> None:
        self._strip = strip
        self._held: list[bytes] = []
        self.usage: bytes | None = None

    def feed(self, block: bytes) -> bytes:
        """Complete SSE events in; what to send the client now out."""
        usage_found = _USAGE_OBJECT.search(block) is not None
        if not self._strip:
            if usage_found:
                self._read(block)
            return block
        if not usage_found and not self._held and _FINISHED.search(block) is None:
            return block
        out: list[bytes] = []
        start = 0
        for end in EVENT_END.finditer(block):
            self._event(block[start : end.end()], out)
            start = end.end()
        if start < len(block):
            self._event(block[start:], out)
        return b"".join(out)

    def flush(self) -> bytes:
        """What is still held, at the end of the stream."""
        held, self._held = b"".join(self._held), []
        return held

    def _read(self, block: bytes) -> None:
        for event in EVENT_END.split(block):
            payload = data_payload(event)
            if payload is not None and _USAGE_OBJECT.search(payload):
                self.usage = payload

    def _event(self, event: bytes, out: list[bytes]) -> None:
        payload = data_payload(event)
        if payload is not None and _USAGE_OBJECT.search(payload):
            self.usage = payload
            if _EMPTY_CHOICES.search(payload):
                out.extend(_with_fields_of(self._held, payload))
                self._held = []
                return
        if payload is not None and _FINISHED.search(payload):
            self._held.append(event)
            return
        out.extend(self._held)
        self._held = []
        out.append(event)


def _with_fields_of(held: list[bytes], usage_payload: bytes) -> list[bytes]:
    """The held events, the last one given the usage chunk's top-level fields it lacks."""
    if not held:
        return held
    try:
        usage = orjson.loads(usage_payload)
        last = orjson.loads(data_payload(held[-1]) or b"")
    except orjson.JSONDecodeError:
        return held
    if not isinstance(usage, dict) or not isinstance(last, dict):
        return held
    extra = b"".join(
        b"," + orjson.dumps(key) + b":" + orjson.dumps(value)
        for key, value in usage.items()
        if key not in last and key not in ("usage", "choices")
    )
    if not extra:
        return held
    event = held[-1]
    close = event.rindex(b"}")
    return [*held[:-1], event[:close] + extra + event[close:]]
