"""The usage a backend reported: found in a stream's events or a whole body, read once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.proxy.sse import data_payload, event_end, event_start, last_event_start

_USAGE_KEY = b'"usage"'
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_FINISH_KEY = b'"finish_reason"'
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts from `usage` (None where the engine left a field out).

    `created_cache_tokens` is the engine's own count of prompt tokens it newly cached
    (`prompt_tokens_details.created_cache_tokens`, where an engine reports one).
    """

    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    created_cache_tokens: int | None = None


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
    cached = created = None
    if isinstance(details, dict):
        cached = _count(details.get("cached_tokens"))
        created = _count(details.get("created_cache_tokens"))
    if cached is None and absent_means_zero and prompt is not None:
        cached = 0
    return Usage(prompt, _count(usage.get("completion_tokens")), cached, created)


class UsageReader:
    """Reads the usage chunk of a stream, and takes it out for a client that did not ask.

    A block costs one scan for a usage object, and a look at its last event: the work does
    not grow with the events a block holds. When stripping, the stream must look as if the
    engine had not been asked for usage; an engine that was asked moves some top-level
    fields from the final chunk to the usage chunk (vLLM's `system_fingerprint`), so until
    the usage chunk came, an event that finishes a choice is held back while it is the last
    one seen, until the next block shows whether the usage chunk follows it and what it lacks.
    """

    __slots__ = ("_held", "_strip", "usage")

    def __init__(self, strip: bool) -> None:
        self._strip = strip
        self._held = b""
        self.usage: bytes | None = None

    def feed(self, block: bytes) -> bytes:
        """Complete SSE events in; what to send the client now out."""
        at = _last_usage(block)
        start = end = 0
        payload = None
        if at >= 0:
            start, end = event_start(block, at), event_end(block, at)
            payload = data_payload(block[start:end])
            self.usage = payload
        if not self._strip:
            return block
        if self._held:
            block, start, end = self._held + block, start + len(self._held), end + len(self._held)
            self._held = b""
        if payload is not None and _EMPTY_CHOICES.search(payload):
            block = _without_usage_event(block, start, end, payload)
        if self.usage is None:
            tail = _finishing_tail(block)
            if tail >= 0:
                self._held = block[tail:]
                return block[:tail]
        return block

    def flush(self) -> bytes:
        """What is still held, at the end of the stream."""
        held, self._held = self._held, b""
        return held


def _last_usage(block: bytes) -> int:
    """Where the last usage object of a block starts; -1 if it holds none."""
    found = block.rfind(_USAGE_KEY)
    while found >= 0 and _USAGE_OBJECT.match(block, found) is None:
        found = block.rfind(_USAGE_KEY, 0, found)
    return found


def _finishing_tail(block: bytes) -> int:
    """Where the last event of `block` starts if it finishes a choice; -1 if it does not.

    Runs on every block of a stripped stream, so it starts from the last `finish_reason` key
    (a search from the end) and cuts the block into events only when that key or one before
    it could lie in the last event: a block of token chunks costs a few byte searches.
    """
    last = block.rfind(_FINISH_KEY)
    if last < 0:
        return -1
    if _FINISHED.match(block, last) is not None:
        tail = last_event_start(block)
        return tail if last >= tail else -1
    # Its last choice goes on; another choice of the same event may finish (n > 1).
    earlier = block.rfind(_FINISH_KEY, 0, last)
    if earlier < 0 or block.find(b"\n\n", earlier, last) >= 0:
        return -1  # none, or only in events before the last (a blank line lies between)
    tail = last_event_start(block)
    if earlier < tail or _FINISHED.search(block, tail) is None:
        return -1
    return tail


def _without_usage_event(block: bytes, start: int, end: int, usage_payload: bytes) -> bytes:
    """`block` without its usage event at `start:end`; the event before it, if it finishes a
    choice, given the usage chunk's top-level fields it lacks (the engine moved them)."""
    rest = block[end:]
    if not start:
        return rest
    previous = last_event_start(block, start)
    moved = b""
    if _FINISHED.search(block, previous, start) is not None:
        moved = _moved_fields(usage_payload, data_payload(block[previous:start]))
    if not moved:
        return block[:start] + rest
    close = block.rindex(b"}", previous, start)
    return b"".join((block[:close], moved, block[close:start], rest))


def _moved_fields(usage_payload: bytes, final_payload: bytes | None) -> bytes:
    """The usage chunk's top-level fields that the final chunk lacks, as members to append."""
    try:
        usage = orjson.loads(usage_payload)
        final = orjson.loads(final_payload or b"")
    except orjson.JSONDecodeError:
        return b""
    if not isinstance(usage, dict) or not isinstance(final, dict):
        return b""
    return b"".join(
        b"," + orjson.dumps(key) + b":" + orjson.dumps(value)
        for key, value in usage.items()
        if key not in final and key not in ("usage", "choices")
    )
