"""Canonical, injective byte rendering of chat and completion prompts for prefix hashing.

Format: a sequence of items, each a two-byte marker (0x00 + tag letter) followed by a payload.
Inside payloads every 0x00 byte is escaped as 0x00 0xFF, so a marker can never be confused with
payload bytes and different message splits never render to the same bytes. Payloads are not
length-prefixed, so a prompt that extends another (more messages, or a longer last message)
renders to an extension of its bytes and shares its leading blocks. The one exception is a
completion prompt given as token ids: it is the whole prompt, so its raw little-endian u32 bytes
run to the end unescaped.

A string message content and a list holding one text part with the same text render the same
(engines template them the same way).
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Mapping
from typing import Any, Literal

import orjson

PromptKind = Literal["chat", "completion"]

_ZERO = b"\x00"
_ZERO_ESCAPED = b"\x00\xff"
_CHAT = b"\x00C"
_COMPLETION = b"\x00G"
_TOOLS = b"\x00T"
_FUNCTIONS = b"\x00F"
_MESSAGE = b"\x00M"
_ROLE = b"\x00R"
_ROLE_JSON = b"\x00r"
_NAME = b"\x00N"
_NAME_JSON = b"\x00n"
_TEXT = b"\x00X"
_PART = b"\x00O"
_KEY = b"\x00K"
_VALUE = b"\x00V"
_PROMPT_TEXT = b"\x00S"
_PROMPT_TOKENS = b"\x00I"
_PROMPT_TOKEN_LIST = b"\x00L"
_JSON = b"\x00J"
_MESSAGE_CORE_KEYS = frozenset(("role", "name", "content"))
_TOKEN_BYTES = 4
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _esc(data: bytes) -> bytes:
    """Escape 0x00 so that payload bytes never form a marker."""
    return data.replace(_ZERO, _ZERO_ESCAPED) if _ZERO in data else data


def _text(value: str) -> bytes:
    return _esc(value.encode("utf-8", "surrogatepass"))


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys); never raises on JSON-like input."""
    try:
        return orjson.dumps(value, option=_JSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr).encode(
            "utf-8", "surrogatepass"
        )
    except (TypeError, ValueError):
        return repr(value).encode("utf-8", "surrogatepass")


def _render_content(content: Any, out: list[bytes]) -> None:
    if content is None:
        return
    if isinstance(content, str):
        out.append(_TEXT)
        out.append(_text(content))
        return
    if not isinstance(content, list):
        out.append(_PART)
        out.append(_esc(canonical_json(content)))
        return
    for part in content:
        if isinstance(part, str):
            out.append(_TEXT)
            out.append(_text(part))
        elif isinstance(part, Mapping) and part.get("type") == "text":
            text = part.get("text")
            if isinstance(text, str):
                out.append(_TEXT)
                out.append(_text(text))
            else:
                out.append(_PART)
                out.append(_esc(canonical_json(part)))
        else:
            out.append(_PART)
            out.append(_esc(canonical_json(part)))


def _render_message(message: Any, out: list[bytes]) -> None:
    append = out.append
    append(_MESSAGE)
    if not isinstance(message, Mapping):
        append(_JSON)
        append(_esc(canonical_json(message)))
        return
    role = message.get("role")
    if type(role) is str:
        append(_ROLE)
        append(_text(role))
    elif role is not None:
        append(_ROLE_JSON)
        append(_esc(canonical_json(role)))
    name = message.get("name")
    if isinstance(name, str):
        append(_NAME)
        append(_text(name))
    elif name is not None:
        append(_NAME_JSON)
        append(_esc(canonical_json(name)))
    content = message.get("content")
    if type(content) is str:
        append(_TEXT)
        append(_text(content))
    else:
        _render_content(content, out)
    core = ("role" in message) + ("content" in message) + (name is not None or "name" in message)
    if len(message) > core:
        _render_extra(message, out)


def _render_extra(message: Mapping[str, Any], out: list[bytes]) -> None:
    """Other message fields (tool_calls, tool_call_id, ...) as sorted key/value pairs."""
    extra = sorted(k for k in message if k not in _MESSAGE_CORE_KEYS and isinstance(k, str))
    for key in extra:
        value = message[key]
        if value is None:
            continue
        out.append(_KEY)
        out.append(_text(key))
        out.append(_VALUE)
        out.append(_esc(canonical_json(value)))


def _render_chat(body: Mapping[str, Any], out: list[bytes]) -> None:
    tools = body.get("tools")
    if tools:
        out.append(_TOOLS)
        out.append(_esc(canonical_json(tools)))
    functions = body.get("functions")
    if functions:
        out.append(_FUNCTIONS)
        out.append(_esc(canonical_json(functions)))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            _render_message(message, out)
    elif messages is not None:
        out.append(_JSON)
        out.append(_esc(canonical_json(messages)))


def _token_bytes(tokens: list[Any]) -> bytes | None:
    """Little-endian u32 bytes of token ids, or None when they are not all u32 ints."""
    try:
        packed = array("I", tokens)
    except (TypeError, OverflowError, ValueError):
        return None
    if packed.itemsize != _TOKEN_BYTES:  # pragma: no cover - exotic platforms
        return None
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        packed.byteswap()
    return packed.tobytes()


def _render_prompt(prompt: Any, limit_bytes: int, out: list[bytes]) -> int:
    """Render a completion prompt; return bytes not rendered (token ids past the limit)."""
    if isinstance(prompt, str):
        out.append(_PROMPT_TEXT)
        out.append(_text(prompt))
        return 0
    if not isinstance(prompt, list) or not prompt:
        if prompt is not None:
            out.append(_JSON)
            out.append(_esc(canonical_json(prompt)))
        return 0
    first = prompt[0]
    if isinstance(first, str) and all(isinstance(p, str) for p in prompt):
        for item in prompt:
            out.append(_PROMPT_TEXT)
            out.append(_text(item))
        return 0
    if isinstance(first, int):
        keep = max(limit_bytes // _TOKEN_BYTES + 1, 0)
        data = _token_bytes(prompt[:keep])
        if data is not None:
            out.append(_PROMPT_TOKENS)
            out.append(data)
            return _TOKEN_BYTES * (len(prompt) - min(keep, len(prompt)))
    elif isinstance(first, list) and all(isinstance(p, list) for p in prompt):
        chunks: list[bytes] = []
        for item in prompt:
            data = _token_bytes(item)
            if data is None:
                break
            chunks.append(_PROMPT_TOKEN_LIST)
            chunks.append(len(item).to_bytes(4, "little"))
            chunks.append(data)
        else:
            out.extend(chunks)
            return 0
    out.append(_JSON)
    out.append(_esc(canonical_json(prompt)))
    return 0


def render_prompt(
    body: Mapping[str, Any], kind: PromptKind, limit_bytes: int = 1 << 62
) -> tuple[bytes, int]:
    """Render a request body; return (bytes, total rendered length).

    The bytes may stop early, past ``limit_bytes``, for token-id prompts (which are costly to
    convert); the total length always counts the whole prompt.
    """
    out: list[bytes] = []
    skipped = 0
    if kind == "chat":
        out.append(_CHAT)
        _render_chat(body, out)
    else:
        out.append(_COMPLETION)
        skipped = _render_prompt(body.get("prompt"), limit_bytes, out)
    data = b"".join(out)
    return data, len(data) + skipped
