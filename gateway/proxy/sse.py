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


def event_start(block: bytes, position: int) -> int:
    """Where the event holding `position` begins: just past the last blank line before it."""
    lf = block.rfind(b"\n\n", 0, position)
    start = lf + 2 if lf >= 0 else 0
    # A CR boundary only matters after the LF one; look for it there alone.
    if block.find(b"\r", start, position) >= 0:
        for boundary in (b"\r\n\r\n", b"\r\r"):
            found = block.rfind(boundary, start, position)
            if found >= 0:
                start = max(start, found + len(boundary))
    return start


def event_end(block: bytes, position: int) -> int:
    """Where the event holding `position` ends: just past its blank line, or the block's end."""
    lf = block.find(b"\n\n", position)
    # As in `event_start`: the regex only when a CR comes before the LF boundary.
    if block.find(b"\r", position, len(block) if lf < 0 else lf) < 0:
        return len(block) if lf < 0 else lf + 2
    found = EVENT_END.search(block, position)
    return len(block) if found is None else found.end()


def last_event_start(block: bytes, end: int | None = None) -> int:
    """Where the last event of a block of complete events (of `block[:end]`) begins."""
    end = len(block) if end is None else end
    while end and block[end - 1] in b"\r\n":
        end -= 1
    return event_start(block, end)


def ends_with_done(block: bytes) -> bool:
    """Whether the last event of `block` is `data: [DONE]` (with or without its blank line)."""
    return block.endswith(DONE_EVENT) or block[-16:].rstrip(b"\r\n").endswith(b"[DONE]")


class EventSplitter:
    """Cuts a byte stream at SSE event boundaries in linear time, holding at most `limit` bytes.

    Each chunk is searched once (with the three bytes before it, which a boundary may
    straddle), and held bytes are joined once. An unfinished event that grows past `limit`
    is handed back to be relayed as it is, so a stream without boundaries is not held.
    """

    __slots__ = ("_limit", "_parts", "_size", "_tail")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> tuple[bytes, bytes]:
        """(complete events, then unfinished bytes to relay unparsed: only past the limit)."""
        parts = self._parts
        if not parts:
            events, rest = split_complete(chunk)
            return events, self._hold(rest) if rest else b""
        tail = self._tail
        events, _ = split_complete(tail + chunk)
        if not events:
            return b"", self._hold(chunk)
        cut = len(events) - len(tail)  # > 0: the held bytes have no boundary of their own
        events = b"".join(parts) + chunk[:cut]
        parts.clear()
        self._size = 0
        self._tail = b""
        rest = chunk[cut:]
        return events, self._hold(rest) if rest else b""

    def rest(self) -> bytes:
        """Whatever is held (an unfinished last event), taken out."""
        held = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._tail = b""
        return held

    def _hold(self, data: bytes) -> bytes:
        self._parts.append(data)
        self._size += len(data)
        if self._size > self._limit:
            return self.rest()
        self._tail = (self._tail + data)[-3:]
        return b""


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
