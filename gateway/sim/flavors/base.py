"""Flavor interface: how one engine kind formats chunks, bodies, errors and metrics."""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from gateway.sim.asgi import JSON
from gateway.sim.config import FlavorName, SimBackendConfig
from gateway.sim.engine import SimEngine
from gateway.sim.request import ContextLengthError, ErrorKind, RequestKind, SimRequestError

_PIECE = "@@SIM_PIECE@@"
_PIECE_JSON = orjson.dumps(_PIECE)
DONE = b"[DONE]"


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """Identity of one response: kind, id, creation time and echoed model name."""

    kind: RequestKind
    request_id: str
    created: int
    model: str
    usage_follows: bool = False  # a usage chunk ends the stream (include_usage)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting of one request."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A complete error response."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class StreamTemplate:
    """Precomputed byte fragments of one stream's token events (SSE framing included)."""

    first: bytes | None
    head: bytes
    tail: bytes
    final_head: bytes
    final_tail: bytes

    def token_event(self, piece_json: bytes, final: bool) -> bytes:
        """The SSE event carrying one token piece (already JSON-encoded)."""
        if final:
            return self.final_head + piece_json + self.final_tail
        return self.head + piece_json + self.tail


class Flavor(ABC):
    """Formatting rules of one engine kind; stateless apart from the backend config."""

    name: FlavorName
    owned_by = ""
    cache_reset_path: str | None = None

    def __init__(self, config: SimBackendConfig) -> None:
        self.config = config

    # ---- ids and chunk dictionaries -------------------------------------------------------
    def request_id(self, kind: RequestKind, rng: random.Random) -> str:
        """A fresh response id."""
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        return f"{prefix}{rng.getrandbits(128):032x}"

    @abstractmethod
    def role_delta(self) -> dict[str, Any] | None:
        """The delta of the role-only first chat chunk, or None when the engine sends none."""

    @abstractmethod
    def content_delta(self, text: str) -> dict[str, Any]:
        """The delta of a chat content chunk."""

    @abstractmethod
    def chat_chunk(
        self, meta: ResponseMeta, delta: dict[str, Any], finish: str | None
    ) -> dict[str, Any]:
        """A chat.completion.chunk object."""

    @abstractmethod
    def completion_chunk(self, meta: ResponseMeta, text: str, finish: str | None) -> dict[str, Any]:
        """A streamed text_completion object."""

    @abstractmethod
    def usage_chunk(self, meta: ResponseMeta, usage: Usage) -> dict[str, Any]:
        """The final choices-less chunk carrying usage."""

    @abstractmethod
    def response(self, meta: ResponseMeta, text: str, finish: str, usage: Usage) -> dict[str, Any]:
        """A non-streamed chat.completion or text_completion object."""

    @abstractmethod
    def stream_error(self, message: str) -> dict[str, Any]:
        """The in-band error event sent after a stream has started."""

    @abstractmethod
    def error(self, kind: ErrorKind, message: str, retry_after_s: int) -> ErrorReply:
        """An error response before the first byte."""

    @abstractmethod
    def models(self) -> dict[str, Any]:
        """The /v1/models body."""

    @abstractmethod
    def metrics(self, engine: SimEngine) -> bytes:
        """The /metrics body in the engine's own metric names."""

    @abstractmethod
    def context_message(self, err: ContextLengthError) -> str:
        """The engine's context-length error message."""

    def extra_get(self, path: str, engine: SimEngine) -> dict[str, Any] | list[Any] | None:
        """Body of a flavor-specific GET route, or None when the path is not one."""
        return None

    def response_headers(self, usage: Usage) -> tuple[tuple[bytes, bytes], ...]:
        """Extra headers of a successful non-streamed response."""
        return ()

    # ---- shared machinery -----------------------------------------------------------------
    def request_error(self, err: SimRequestError, retry_after_s: int) -> ErrorReply:
        """Map a validation error to this engine's reply."""
        if isinstance(err, ContextLengthError):
            return self.error(err.kind, self.context_message(err), retry_after_s)
        return self.error(err.kind, err.message, retry_after_s)

    def stream_template(self, meta: ResponseMeta, finish: str, prefix: bytes) -> StreamTemplate:
        """Split one request's non-final and final token chunks around the token piece."""
        first: bytes | None = None
        if meta.kind == "chat":
            role = self.role_delta()
            if role is not None:
                first = sse(prefix, orjson.dumps(self.chat_chunk(meta, role, None)))
            body = self.chat_chunk(meta, self.content_delta(_PIECE), None)
            final = self.chat_chunk(meta, self.content_delta(_PIECE), finish)
        else:
            body = self.completion_chunk(meta, _PIECE, None)
            final = self.completion_chunk(meta, _PIECE, finish)
        head, tail = orjson.dumps(body).split(_PIECE_JSON)
        final_head, final_tail = orjson.dumps(final).split(_PIECE_JSON)
        return StreamTemplate(
            first, prefix + head, tail + b"\n\n", prefix + final_head, final_tail + b"\n\n"
        )


def sse(prefix: bytes, payload: bytes) -> bytes:
    """One SSE event."""
    return prefix + payload + b"\n\n"


_STATUS: Mapping[ErrorKind, int] = MappingProxyType(
    {
        ErrorKind.INVALID_JSON: 400,
        ErrorKind.SCHEMA: 400,
        ErrorKind.INVALID_VALUE: 400,
        ErrorKind.CONTEXT_LENGTH: 400,
        ErrorKind.NOT_FOUND: 404,
        ErrorKind.SERVER_ERROR: 500,
        ErrorKind.OVERLOADED: 429,
        ErrorKind.UNAVAILABLE: 503,
    }
)
_OPENAI_TYPES: Mapping[int, str] = MappingProxyType(
    {
        400: "BadRequestError",
        404: "NotFoundError",
        429: "TooManyRequestsError",
        500: "InternalServerError",
        503: "ServiceUnavailableError",
    }
)


def openai_status(kind: ErrorKind) -> tuple[int, str]:
    """HTTP status and error type name used by the Python (FastAPI) engines."""
    status = _STATUS[kind]
    return status, _OPENAI_TYPES[status]


def retry_headers(status: int, retry_after_s: int) -> tuple[tuple[bytes, bytes], ...]:
    """Retry-After on 429/503 when enabled."""
    if status in (429, 503) and retry_after_s > 0:
        return ((b"retry-after", str(retry_after_s).encode()),)
    return ()


class PromText:
    """Tiny Prometheus text-format writer (HELP/TYPE once per family)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, value: float, labels: str = "", suffix: str = ""
    ) -> None:
        """Write one family with one sample."""
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        self.sample(name + suffix, value, labels)

    def sample(self, name: str, value: float, labels: str = "") -> None:
        """Write one more sample of the current family."""
        label_text = "{" + labels + "}" if labels else ""
        self._lines.append(f"{name}{label_text} {go_float(value)}")

    def render(self) -> bytes:
        """The exposition text."""
        return ("\n".join(self._lines) + "\n").encode()


def go_float(value: float) -> str:
    """A sample value as prometheus_client writes it (Go's switch to exponents above 1e6)."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    text = repr(d)
    dot = text.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text
