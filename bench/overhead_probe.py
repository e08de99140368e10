"""A correctness probe of one target before it is loaded: what one request really returns."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

PROMPT = "Hello, how are you today?"
FILLER = "You are a helpful assistant. "


def system_text(n_bytes: int) -> str:
    """The filler system message of bench/lua/overhead_common.lua."""
    return (FILLER * (n_bytes // len(FILLER) + 1))[:n_bytes]


def request_body(
    model: str, max_tokens: int, stream: bool, system_bytes: int = 0
) -> dict[str, Any]:
    """The chat request the Lua scripts send (same fields, same order)."""
    messages = [{"role": "user", "content": PROMPT}]
    if system_bytes > 0:
        messages.insert(0, {"role": "system", "content": system_text(system_bytes)})
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return body


def _sse_summary(raw: bytes) -> dict[str, Any]:
    events = content = 0
    done = False
    for line in raw.splitlines():
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        events += 1
        if payload == b"[DONE]":
            done = True
            continue
        chunk = orjson.loads(payload)
        for choice in chunk.get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                content += 1
    return {"data_events": events, "content_events": content, "done": done}


def probe(
    url: str, model: str, max_tokens: int, stream: bool, system_bytes: int = 0
) -> dict[str, Any]:
    """Send one request; report status, bytes, and for a stream its SSE events and reads."""
    body = orjson.dumps(request_body(model, max_tokens, stream, system_bytes))
    headers = {"content-type": "application/json"}
    path = f"{url}/v1/chat/completions"
    with (
        httpx.Client(timeout=10.0) as client,
        client.stream("POST", path, content=body, headers=headers) as response,
    ):
        pieces = list(response.iter_raw())
    raw = b"".join(pieces)
    out: dict[str, Any] = {"status": response.status_code, "bytes": len(raw)}
    if stream:
        out.update(_sse_summary(raw), reads=len(pieces))
        out["ok"] = (
            response.status_code == 200 and out["done"] and out["content_events"] == max_tokens
        )
    else:
        choices = orjson.loads(raw).get("choices") if response.status_code == 200 else None
        out["ok"] = bool(choices)
    return out
