"""OpenAPI description of the raw-ASGI inference routes, merged into the ops app's schema."""

from __future__ import annotations

from typing import Any


def _schemas() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The error object, the fields both routes share, a chat message, a prompt."""
    error = {
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
    part = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
    }
    message_schema = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "minLength": 1},
            "name": {"type": "string"},
            "content": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": part}, {"type": "null"}]
            },
        },
    }
    common_fields = {
        "model": {"type": "string", "minLength": 1},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    }
    tokens = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
    prompt_schema = {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
            tokens,
            {"type": "array", "items": tokens, "minItems": 1},
        ]
    }
    return error, common_fields, message_schema, prompt_schema


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
    _, shared, message, prompt = _schemas()
    common = dict(shared)
    if models:
        common["model"] = {"type": "string", "enum": models}
    chat = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {**common, "messages": {"type": "array", "items": message, "minItems": 1}},
    }
    completion = {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {**common, "prompt": prompt},
    }
    return {
        "/v1/chat/completions": _operation("Chat completion (OpenAI)", chat, "chat"),
        "/v1/completions": _operation("Text completion (OpenAI)", completion, "completion"),
    }


def merge_inference_schema(schema: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """`schema` (FastAPI's) with the inference routes and the error object added."""
    schema.setdefault("paths", {}).update(inference_paths(models))
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _schemas()[0]
    return schema
