"""SSE relaying helpers: split at event boundaries and rewrite engine error events."""

from __future__ import annotations

import re

import orjson

from gateway.fleet.adapters.base import EngineAdapter

ERROR_MARK = b'"error"'
DONE_EVENT = b"data: [DONE]\n\n"


EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def split_complete(buffer: bytes) -> tuple[bytes, bytes]:
    """Split into (complete events, unfinished remainder) at the last blank line.

    SSE lines end in LF, CRLF or CR; most engines use LF, some Python servers CRLF.
    """
    end = buffer.rfind(b"\n\n")
    if end >= 0 and b"\r" not in buffer:
        return buffer[: end + 2], buffer[end + 2 :]
    ends = [m.end() for m in EVENT_END.finditer(buffer)]
    if not ends:
        return b"", buffer
    return buffer[: ends[-1]], buffer[ends[-1] :]


def rewrite_error_events(block: bytes, adapter: EngineAdapter) -> tuple[bytes, bool]:
    """Rewrite engine-shaped in-band error events into OpenAI's shape.

    Returns the new block and whether it carried an error. Events without a top-level
    `error` key (including content that merely mentions the word) pass through unchanged.
    """
    out: list[bytes] = []
    found = False
    for event in EVENT_END.split(block):
        if not event:
            continue
        payload = data_payload(event)
        if payload is not None and ERROR_MARK in payload:
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and "error" in parsed:
                error = adapter.normalize_stream_error(parsed)
                out.append(b"data: " + error.body())
                found = True
                continue
        out.append(event)
    return b"\n\n".join(out) + b"\n\n", found


def data_payload(event: bytes) -> bytes | None:
    """The payload of an event's first `data:` line."""
    for line in event.splitlines():
        if line.startswith(b"data:"):
            return line[5:].lstrip(b" ")
    return None
