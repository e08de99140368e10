"""Scripted backends for gateway tests: a good engine, a hanging one, SSE pieces."""

from __future__ import annotations

import orjson

from tests.integration.upstream.rawserver import Conn, Request

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "model": "raw-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)


def event(content: str) -> bytes:
    """One chat stream chunk as an SSE event."""
    chunk = {
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


DONE = b"data: [DONE]\n\n"
STREAM = (event("o"), event("k"), DONE)


def wants_stream(request: Request) -> bool:
    """Whether the request body asked for a stream."""
    return bool(orjson.loads(request.body).get("stream")) if request.body else False


async def answer(conn: Conn, request: Request) -> None:
    """A whole JSON answer or a short SSE stream, as the request asked."""
    if wants_stream(request):
        await conn.stream_head()
        for part in STREAM:
            await conn.chunk(part)
        await conn.chunk(b"")
    else:
        await conn.respond(200, ANSWER, b"content-type: application/json\r\n")


async def good(conn: Conn) -> None:
    """Answer every request on the connection."""
    while (request := await conn.request()) is not None:
        await answer(conn, request)


async def hang(conn: Conn) -> None:
    """Read the request, then never answer (until the client hangs up)."""
    await conn.request()
    await conn.wait_closed_by_client()


async def die_before_answering(conn: Conn) -> None:
    """Read the request, then kill the connection without a byte of answer."""
    await conn.request()
    conn.abort()
