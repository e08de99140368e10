"""OpenAPI description of the raw-ASGI inference routes, merged into the ops app's schema."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "minLength": 1},
        "name": {"type": "string"},
        "content": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": _PART}, {"type": "null"}]
        },
    },
}
_COMMON = {
    "model": {"type": "string", "minLength": 1},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
}
_TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_PROMPT = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        _TOKENS,
        {"type": "array", "items": _TOKENS, "minItems": 1},
    ]
}


def _operation(summary: str, body: dict[str, Any], op_id: str) -> dict[str, Any]:
    errors = {
        str(status): {
            "description": why,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status, why in (
            (400, "invalid request (the `param` names the field)"),
            (404, "no backend serves the model"),
            (413, "body over `server.max_body_bytes`"),
            (503, "no backend available, over capacity, or shutting down (Retry-After)"),
        )
    }
    ok = {
        "description": "the backend's answer, relayed",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    return {
        "post": {
            "summary": summary,
            "operationId": op_id,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body}},
            },
            "responses": {"200": ok, **errors},
        }
    }


def inference_paths(models: list[str]) -> dict[str, Any]:
    """The two inference routes; `model` is limited to `models` when given."""
    common = dict(_COMMON)
    if models:
        common["model"] = {"type": "string", "enum": models}
    chat = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {**common, "messages": {"type": "array", "items": _MESSAGE, "minItems": 1}},
    }
    completion = {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {**common, "prompt": _PROMPT},
    }
    return {
        "/v1/chat/completions": _operation("Chat completion (OpenAI)", chat, "chat"),
        "/v1/completions": _operation("Text completion (OpenAI)", completion, "completion"),
    }


def merge_inference_schema(schema: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """`schema` (FastAPI's) with the inference routes and the error object added."""
    schema.setdefault("paths", {}).update(inference_paths(models))
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR
    return schema
