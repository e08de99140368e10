"""TGI dialect: empty ids, role on every delta, usage null, {error, error_type} errors, /info."""

from __future__ import annotations

import random
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from gateway.sim.asgi import TEXT
from gateway.sim.config import SimBackendConfig
from gateway.sim.engine import SimEngine
from gateway.sim.flavors.base import ErrorReply, Flavor, PromText, ResponseMeta, Usage
from gateway.sim.request import ContextLengthError, ErrorKind, RequestKind

TGI_VERSION = "3.3.4"  # the default; SimBackendConfig.tgi_version picks another release

# kind -> (status, error_type); None error_type = axum extractor rejection (plain text body).
_ERRORS: Mapping[ErrorKind, tuple[int, str | None]] = MappingProxyType(
    {
        ErrorKind.INVALID_JSON: (400, None),
        ErrorKind.SCHEMA: (422, None),
        ErrorKind.INVALID_VALUE: (422, "validation"),
        ErrorKind.CONTEXT_LENGTH: (422, "validation"),
        ErrorKind.NOT_FOUND: (422, "validation"),
        ErrorKind.SERVER_ERROR: (424, "generation"),
        ErrorKind.OVERLOADED: (429, "overloaded"),
        ErrorKind.UNAVAILABLE: (503, "healthcheck"),
    }
)


class TgiFlavor(Flavor):
    """Formats of TGI 3.x's OpenAI routes (serde-tagged chunks, axum SSE)."""

    name = "tgi"

    def __init__(self, config: SimBackendConfig) -> None:
        super().__init__(config)
        self.version = config.tgi_version
        self.fingerprint = f"{config.tgi_version}-native"

    def request_id(self, kind: RequestKind, rng: random.Random) -> str:
        return ""

    def role_delta(self) -> dict[str, Any] | None:
        return None

    def content_delta(self, text: str) -> dict[str, Any]:
        return {"role": "assistant", "content": text}

    def chat_chunk(
        self, meta: ResponseMeta, delta: dict[str, Any], finish: str | None
    ) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {
            "object": "chat.completion.chunk",
            "id": "",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": self.fingerprint,
            "choices": [choice],
            "usage": None,
        }

    def completion_chunk(self, meta: ResponseMeta, text: str, finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish or ""}
        return {
            "object": "text_completion",
            "id": "",
            "created": meta.created,
            "choices": [choice],
            "model": meta.model,
            "system_fingerprint": self.fingerprint,
        }

    def _usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }

    def usage_chunk(self, meta: ResponseMeta, usage: Usage) -> dict[str, Any]:
        return {
            "object": "chat.completion.chunk" if meta.kind == "chat" else "text_completion",
            "id": "",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": self.fingerprint,
            "choices": [],
            "usage": self._usage(usage),
        }

    def response(self, meta: ResponseMeta, text: str, finish: str, usage: Usage) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if meta.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason=finish)
        return {
            "object": "chat.completion" if meta.kind == "chat" else "text_completion",
            "id": "",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": self.fingerprint,
            "choices": [choice],
            "usage": self._usage(usage),
        }

    def response_headers(self, usage: Usage) -> tuple[tuple[bytes, bytes], ...]:
        return (
            (b"x-compute-type", b"gpu+optimized"),
            (b"x-prompt-tokens", str(usage.prompt_tokens).encode()),
            (b"x-generated-tokens", str(usage.completion_tokens).encode()),
        )

    def stream_error(self, message: str) -> dict[str, Any]:
        return {"error": {"message": message, "http_status_code": 424}}

    def error(self, kind: ErrorKind, message: str, retry_after_s: int) -> ErrorReply:
        status, error_type = _ERRORS[kind]
        if error_type is None:
            if kind is ErrorKind.INVALID_JSON:
                detail = message.removeprefix("JSON decode error: ")
                text = f"Failed to parse the request body as JSON: {detail}"
            else:
                text = f"Failed to deserialize the JSON body into the target type: {message}"
            return ErrorReply(status, text.encode(), TEXT)
        if kind is ErrorKind.OVERLOADED:
            message = "Model is overloaded"
        return ErrorReply(status, orjson.dumps({"error": message, "error_type": error_type}))

    def context_message(self, err: ContextLengthError) -> str:
        return (
            f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {err.limit}. "
            f"Given: {err.prompt_tokens} `inputs` tokens and {err.max_tokens} `max_new_tokens`"
        )

    def models(self) -> dict[str, Any]:
        model = self.config.model
        return {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": 0, "owned_by": model}],
        }

    def extra_get(self, path: str, engine: SimEngine) -> dict[str, Any] | list[Any] | None:
        if path != "/info":
            return None
        return self.info()

    def info(self) -> dict[str, Any]:
        """`/info`: the router's Info. TGI 2.x also carries the backend's batch limits
        (`max_batch_total_tokens`: the tokens its KV cache holds); 3.x dropped those."""
        c = self.config
        limit = c.max_model_len
        head: dict[str, Any] = {"model_id": c.model, "model_sha": None}
        if not self.version.startswith(("0.", "1.", "2.")):
            return {
                **head,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": limit - 1,
                "max_total_tokens": limit,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": self.version,
                "sha": None,
                "docker_label": None,
            }
        return {
            **head,
            "model_dtype": "torch.bfloat16",
            "model_device_type": "cuda",
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": 128,
            "max_best_of": 2,
            "max_stop_sequences": 4,
            "max_input_tokens": limit - 1,
            "max_total_tokens": limit,
            "waiting_served_ratio": 0.3,
            "max_batch_total_tokens": c.kv_capacity_tokens,
            "max_waiting_tokens": 20,
            "max_batch_size": None,
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": self.version,
            "sha": None,
            "docker_label": None,
        }

    def metrics(self, engine: SimEngine) -> bytes:
        s = engine.stats
        out = PromText()
        out.family("tgi_queue_size", "gauge", "Current queue size", s.requests_waiting)
        out.family("tgi_batch_current_size", "gauge", "Current batch size", s.requests_running)
        used = s.active_blocks * self.config.block_size
        out.family("tgi_batch_current_max_tokens", "gauge", "Maximum tokens of the batch", used)
        out.family("tgi_request_count", "counter", "Total number of requests", s.requests_total)
        out.family("tgi_request_success", "counter", "Successful requests", s.success_total)
        out.family(
            "tgi_request_failure", "counter", "Failed requests", s.errors_total, 'err="generation"'
        )
        _histogram(
            out, "tgi_request_input_length", "Input tokens", s.prompt_tokens_total, s.prefills_total
        )
        _histogram(
            out, "tgi_request_generated_tokens", "Generated tokens",
            s.generation_tokens_total, s.success_total,
        )  # fmt: skip
        return out.render()


def _histogram(out: PromText, name: str, help_text: str, total: float, count: int) -> None:
    out.family(name, "histogram", help_text, count, 'le="+Inf"', "_bucket")
    out.sample(f"{name}_sum", total)
    out.sample(f"{name}_count", count)
