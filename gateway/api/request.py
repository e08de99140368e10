"""Reading an OpenAI request: only the fields the gateway needs, validated with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.errors import GatewayError, bad_request

RequestKind = Literal["chat", "completion"]


_ASK_USAGE = b'{"stream_options":{"include_usage":true},'


@dataclass(slots=True)
class InferenceRequest:
    """A validated inference request; `body` is forwarded upstream exactly as the client sent it.

    `usage_body`, when set, is the same body also asking for the usage chunk (a streaming
    client that did not ask for it): the gateway reads `cached_tokens` and token counts from
    every response, and strips that chunk before it reaches such a client.
    """

    kind: RequestKind
    body: bytes
    data: dict[str, Any]
    model: str
    stream: bool
    request_id: bytes
    usage_body: bytes | None = None
    # Set by admission from the request's tier: sent to engines that take a priority.
    engine_priority: int | None = None

    @property
    def max_tokens(self) -> int | None:
        """The output cap the client asked for, if any."""
        for key in ("max_completion_tokens", "max_tokens"):
            value = self.data.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Structural caps on a request body, far below any recursion limit downstream."""

    max_depth: int = 64
    max_messages: int = 4096


DEFAULT_LIMITS = BodyLimits()


def parse_request(
    kind: RequestKind, body: bytes, request_id: bytes, limits: BodyLimits = DEFAULT_LIMITS
) -> InferenceRequest:
    """Validate the fields the gateway reads; raise GatewayError (400) naming the bad field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc.msg}.") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    # Only a body with more brackets than the depth limit can nest that deep.
    if body.count(b"[") + body.count(b"{") > limits.max_depth:
        _check_depth(data, limits.max_depth)
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise bad_request(
            f"`messages` has {len(messages)} entries, over the limit of {limits.max_messages}.",
            param="messages",
            code="too_many_messages",
        )
    model = data.get("model")
    if model is None:
        raise bad_request("You must provide a model parameter.", param="model")
    if not isinstance(model, str) or not model:
        raise bad_request("`model` must be a non-empty string.", param="model")
    stream = _stream_flag(data)
    if kind == "chat":
        _check_messages(data.get("messages"))
    else:
        _check_prompt(data.get("prompt"))
    usage_body = _asking_for_usage(body, data) if stream else None
    return InferenceRequest(kind, body, data, model, stream, request_id, usage_body)


def with_priority(body: bytes, data: dict[str, Any], priority: int) -> bytes:
    """`body` with the engine `priority` set: prepended (one concatenation), or the body
    rewritten when the client sent a `priority` of its own, which would otherwise win."""
    if "priority" in data:
        return orjson.dumps({**orjson.loads(body), "priority": priority})
    return b'{"priority":' + str(priority).encode() + b"," + body.lstrip()[1:]


def _asking_for_usage(body: bytes, data: dict[str, Any]) -> bytes | None:
    """The body with `stream_options.include_usage` set, or None when the client set it."""
    options = data.get("stream_options")
    if "stream_options" not in data:
        # Prepend the key: the body is an object with at least `model`, so a comma follows.
        return _ASK_USAGE + body.lstrip()[1:]
    if isinstance(options, dict) and (
        options.get("include_usage") is True or options.get("continuous_usage_stats")
    ):
        # Usage on every chunk could not be taken back out: leave such a request as it is.
        return None
    merged = (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )
    return orjson.dumps({**data, "stream_options": merged})


def _stream_flag(data: dict[str, Any]) -> bool:
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("`stream` must be a boolean.", param="stream")
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request("`stream_options` must be an object.", param="stream_options")
        if not stream:
            raise bad_request(
                "`stream_options` can only be set when `stream` is true.", param="stream_options"
            )
        include_usage = options.get("include_usage")
        if include_usage is not None and not isinstance(include_usage, bool):
            raise bad_request(
                "`stream_options.include_usage` must be a boolean.",
                param="stream_options.include_usage",
            )
    return bool(stream)


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise bad_request("You must provide a `messages` parameter.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        where = f"messages.[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"`{where}` must be an object.", param=where)
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise bad_request(f"`{where}.role` must be a non-empty string.", param=f"{where}.role")
        content = message.get("content")
        if content is None:
            if role == "assistant" or "tool_calls" in message:
                continue
            raise bad_request(f"`{where}.content` is required.", param=f"{where}.content")
        if isinstance(content, list):
            _check_parts(content, f"{where}.content")
        elif not isinstance(content, str):
            raise bad_request(
                f"`{where}.content` must be a string or an array of content parts.",
                param=f"{where}.content",
            )


def _check_parts(parts: list[Any], where: str) -> None:
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(
                f"`{where}.[{j}]` must be a content part object with a `type`.",
                param=f"{where}.[{j}]",
            )
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise bad_request(
                f"`{where}.[{j}].text` must be a string.", param=f"{where}.[{j}].text"
            )


def _check_prompt(prompt: Any) -> None:
    if prompt is None:
        raise bad_request("You must provide a `prompt` parameter.", param="prompt")
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return
        if all(_is_token_list(p) for p in prompt):
            return
    raise bad_request(
        "`prompt` must be a string, an array of strings, an array of token ids, "
        "or an array of token-id arrays.",
        param="prompt",
    )


def _is_token_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def too_large(limit: int) -> GatewayError:
    """The 413 answered when a body exceeds the configured limit."""
    return GatewayError(
        413,
        f"The request body exceeds the limit of {limit} bytes.",
        code="request_too_large",
    )


def _check_depth(data: object, limit: int) -> None:
    """Raise a 400 when arrays and objects nest more than `limit` levels (iteratively)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise bad_request(
                f"The request JSON nests deeper than the limit of {limit} levels.",
                code="json_too_deep",
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
