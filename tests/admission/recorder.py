"""A fake model server that records every inference request's body and headers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson

from tests.integration.upstream.backends import ANSWER


class Recorder:
    """Answers health, models and chat completions; keeps what each completion request sent."""

    def __init__(self, model: str = "rec-model") -> None:
        self.model = model
        self.bodies: list[bytes] = []
        self.headers: list[dict[bytes, bytes]] = []
        # While cleared, completions are held (bounded) after being recorded.
        self.release = threading.Event()
        self.release.set()
        self.arrived = threading.Event()  # set at each recorded completion

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        status, answer = 200, b"{}"
        if path.endswith("/completions"):
            self.bodies.append(body)
            self.headers.append(dict(scope["headers"]))
            self.arrived.set()
            await asyncio.to_thread(self.release.wait, 30)
            answer = ANSWER
        elif path == "/v1/models":
            answer = orjson.dumps({"object": "list", "data": [{"id": self.model}]})
        elif path == "/metrics":
            status, answer = 404, b""
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
