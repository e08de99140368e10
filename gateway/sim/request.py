"""Engine-like parsing and validation of OpenAI chat/completions request bodies."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import orjson

from gateway.sim.config import DEFAULT_SLOW_FIRST_TOKEN_S, FAULT_NAMES, SimBackendConfig
from gateway.sim.tokenizer import Tokenizer
from gateway.sim.tokens import DEFAULT_TOKENIZER, MAX_TOKEN_ID, Prompt, render_chat

RequestKind = Literal["chat", "completion"]


class ErrorKind(Enum):
    """Why a request failed; each flavor maps it to its own status and body."""

    INVALID_JSON = "invalid_json"  # body is not JSON (TGI/axum: 400 plain text)
    SCHEMA = "schema"  # missing field or wrong type (TGI/axum: 422 plain text)
    INVALID_VALUE = "invalid_value"  # semantic validation (TGI: 422 validation)
    CONTEXT_LENGTH = "context_length"
    NOT_FOUND = "not_found"
    SERVER_ERROR = "server_error"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"


class SimRequestError(Exception):
    """A request the engine rejects before generating."""

    def __init__(
        self, kind: ErrorKind, message: str, param: str | None = None, value: Any = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param  # the request field at fault, when the engine names one
        self.value = value


class ContextLengthError(SimRequestError):
    """Prompt plus requested tokens exceed the context window."""

    def __init__(self, prompt_tokens: int, max_tokens: int, limit: int) -> None:
        super().__init__(ErrorKind.CONTEXT_LENGTH, "context length exceeded")
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.limit = limit


@dataclass(frozen=True, slots=True)
class SimRequest:
    """A validated generation request."""

    kind: RequestKind
    model: str
    stream: bool
    include_usage: bool
    prompt: Prompt
    max_tokens: int
    finish_reason: str
    sim_fault: str | None
    fault_delay_s: float


def parse_request(
    body: bytes,
    kind: RequestKind,
    config: SimBackendConfig,
    tokenizer: Tokenizer = DEFAULT_TOKENIZER,
) -> SimRequest:
    """Parse and validate a body as the configured engine would (with its tokenizer)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SimRequestError(ErrorKind.INVALID_JSON, f"JSON decode error: {exc}") from None
    if not isinstance(data, dict):
        raise SimRequestError(ErrorKind.SCHEMA, "Request body must be a JSON object")
    model = _model(data, config)
    stream = _opt_bool(data, "stream") or False
    include_usage = _include_usage(data, stream, config)
    if kind == "chat":
        prompt = Prompt.from_text(_render_messages(data), tokenizer)
    else:
        prompt = _completion_prompt(data.get("prompt"), tokenizer)
    requested = _max_tokens(data)
    limit = config.max_model_len
    if prompt.n_tokens + (requested or 1) > limit:
        raise ContextLengthError(prompt.n_tokens, requested or 0, limit)
    if requested is not None:
        max_tokens, finish = requested, "length"
    else:
        max_tokens = min(config.default_max_tokens, limit - prompt.n_tokens)
        finish = "stop" if max_tokens == config.default_max_tokens else "length"
    fault, delay = _sim_fault(data)
    return SimRequest(kind, model, stream, include_usage, prompt, max_tokens, finish, fault, delay)


def _model(data: dict[str, Any], config: SimBackendConfig) -> str:
    model = data.get("model")
    if model is None:
        return config.model
    if not isinstance(model, str):
        raise SimRequestError(ErrorKind.SCHEMA, "model: Input should be a valid string")
    if model != config.model and config.flavor != "tgi":
        raise SimRequestError(ErrorKind.NOT_FOUND, f"The model `{model}` does not exist.", "model")
    return model


def _opt_bool(data: dict[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        raise SimRequestError(ErrorKind.SCHEMA, f"{key}: Input should be a valid boolean")
    return value


def _include_usage(data: dict[str, Any], stream: bool, config: SimBackendConfig) -> bool:
    options = data.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise SimRequestError(ErrorKind.SCHEMA, "stream_options: Input should be an object")
    if not stream and config.flavor == "vllm":
        raise SimRequestError(
            ErrorKind.INVALID_VALUE, "Stream options can only be defined when `stream=True`."
        )
    # vLLM 0.32's StreamOptions defaults include_usage to false (tests/fixtures/vllm).
    return bool(_opt_bool(options, "include_usage"))


def _max_tokens(data: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise SimRequestError(ErrorKind.SCHEMA, f"{key}: Input should be a valid integer")
        if value < 1:
            raise SimRequestError(
                ErrorKind.INVALID_VALUE, f"{key} must be at least 1, got {value}.", key, value
            )
        return value
    return None


def _render_messages(data: dict[str, Any]) -> str:
    messages = data.get("messages")
    if messages is None:
        raise SimRequestError(ErrorKind.SCHEMA, "messages: Field required")
    if not isinstance(messages, list):
        raise SimRequestError(ErrorKind.SCHEMA, "messages: Input should be a valid list")
    if not messages:
        raise SimRequestError(ErrorKind.INVALID_VALUE, "messages must contain at least one message")
    for i, message in enumerate(messages):
        _check_message(i, message)
    tools = data.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise SimRequestError(ErrorKind.SCHEMA, "tools: Input should be a valid list")
    return render_chat(messages, tools)


def _check_message(i: int, message: Any) -> None:
    where = f"messages.{i}"
    if not isinstance(message, dict):
        raise SimRequestError(ErrorKind.SCHEMA, f"{where}: Input should be an object")
    if not isinstance(message.get("role"), str):
        raise SimRequestError(ErrorKind.SCHEMA, f"{where}.role: Field required")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise SimRequestError(ErrorKind.SCHEMA, f"{where}.content: Input should be a string")
    for j, part in enumerate(content):
        ok = isinstance(part, dict) and isinstance(part.get("type"), str)
        if ok and part["type"] == "text":
            ok = isinstance(part.get("text"), str)
        if not ok:
            raise SimRequestError(ErrorKind.SCHEMA, f"{where}.content.{j}: invalid content part")


def _completion_prompt(prompt: Any, tokenizer: Tokenizer) -> Prompt:
    if prompt is None:
        raise SimRequestError(ErrorKind.SCHEMA, "prompt: Field required")
    if isinstance(prompt, str):
        if not prompt:
            raise SimRequestError(ErrorKind.INVALID_VALUE, "prompt must not be empty")
        return Prompt.from_text(prompt, tokenizer)
    if not isinstance(prompt, list) or not prompt:
        raise SimRequestError(ErrorKind.SCHEMA, "prompt: Input should be a string or a list")
    if all(isinstance(p, str) for p in prompt):
        return Prompt.from_text("".join(prompt), tokenizer)
    if all(_is_token(t) for t in prompt):
        return Prompt.from_token_ids(prompt)
    if all(isinstance(p, list) and p and all(_is_token(t) for t in p) for p in prompt):
        return Prompt.from_token_ids([t for p in prompt for t in p])
    raise SimRequestError(ErrorKind.SCHEMA, "prompt: Input should be a string or token ids")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


def _sim_fault(data: dict[str, Any]) -> tuple[str | None, float]:
    fault = data.get("sim_fault")
    if fault is not None and fault not in FAULT_NAMES:
        raise SimRequestError(ErrorKind.INVALID_VALUE, f"sim_fault must be one of {FAULT_NAMES}")
    delay = data.get("sim_fault_delay_s", DEFAULT_SLOW_FIRST_TOKEN_S)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise SimRequestError(ErrorKind.INVALID_VALUE, "sim_fault_delay_s must be >= 0")
    return fault, float(delay)


def parse_tokenize(body: bytes, tokenizer: Tokenizer = DEFAULT_TOKENIZER) -> Prompt:
    """The prompt of a vLLM `/tokenize` body: `{"prompt": str}` or `{"messages": [...]}`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SimRequestError(ErrorKind.INVALID_JSON, f"JSON decode error: {exc}") from None
    if not isinstance(data, dict):
        raise SimRequestError(ErrorKind.SCHEMA, "Request body must be a JSON object")
    if "messages" in data:
        return Prompt.from_text(_render_messages(data), tokenizer)
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise SimRequestError(ErrorKind.SCHEMA, "prompt: Field required", "prompt")
    return Prompt.from_text(prompt, tokenizer)
