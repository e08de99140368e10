"""vLLM OpenAI-server dialect (0.32): role-only first chunk, stop_reason, nested int-code errors."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import xxhash

from gateway.sim.config import SimBackendConfig
from gateway.sim.engine import SimEngine
from gateway.sim.flavors.base import (
    ErrorReply,
    Flavor,
    ResponseMeta,
    Usage,
    openai_status,
    retry_headers,
)
from gateway.sim.flavors.vllm_metrics import render_metrics
from gateway.sim.request import ContextLengthError, ErrorKind, RequestKind, SimRequestError

VLLM_VERSION = "0.32.0"


class VllmFlavor(Flavor):
    """Formats of vLLM's OpenAI-compatible server (exclude_unset chunks, ErrorInfo errors).

    Shapes follow real vLLM 0.32 captures; usage carries `prompt_tokens_details` whenever
    cached tokens are reported (`--enable-prompt-tokens-details`), zero included.
    """

    name = "vllm"
    owned_by = "vllm"
    cache_reset_path = "/reset_prefix_cache"

    def __init__(self, config: SimBackendConfig) -> None:
        super().__init__(config)
        digest = xxhash.xxh32_hexdigest(f"{config.backend_id}:{config.model}".encode())
        self.fingerprint = f"vllm-{VLLM_VERSION}-{digest}"

    def request_id(self, kind: RequestKind, rng: random.Random) -> str:
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        return f"{prefix}{rng.getrandbits(64):016x}"

    def role_delta(self) -> dict[str, Any] | None:
        return {"role": "assistant", "content": ""}

    def content_delta(self, text: str) -> dict[str, Any]:
        return {"content": text}

    def chat_chunk(
        self, meta: ResponseMeta, delta: dict[str, Any], finish: str | None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
        choice["finish_reason"] = finish
        chunk: dict[str, Any] = {
            "id": meta.request_id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "choices": [choice],
        }
        if "role" in delta:
            chunk.update(prompt_token_ids=None, prompt_text=None)
            return chunk
        if finish is not None:
            choice["stop_reason"] = None
        choice["token_ids"] = None
        if finish is not None and not meta.usage_follows:
            # vLLM 0.32 puts it on the final chunk, or on the usage chunk when one follows.
            chunk["system_fingerprint"] = self.fingerprint
        return chunk

    def completion_chunk(self, meta: ResponseMeta, text: str, finish: str | None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
            "prompt_token_ids": None,
            "token_ids": None,
        }
        return {
            "id": meta.request_id,
            "object": "text_completion",
            "created": meta.created,
            "model": meta.model,
            "choices": [choice],
        }

    def _usage(self, kind: RequestKind, usage: Usage, *, stream: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": usage.prompt_tokens,
            "total_tokens": usage.total_tokens,
            "completion_tokens": usage.completion_tokens,
        }
        if self.config.report_cached_tokens:
            details: dict[str, Any] = {"cached_tokens": usage.cached_tokens}
            if kind == "chat":
                bs = self.config.block_size
                details["created_cache_tokens"] = max(
                    0, usage.prompt_tokens // bs * bs - usage.cached_tokens
                )
            elif not stream:
                details["created_cache_tokens"] = None
            if not stream:
                details["multimodal_tokens"] = None
            out["prompt_tokens_details"] = details
        elif not stream:
            out["prompt_tokens_details"] = None
        if not stream:
            out["completion_tokens_details"] = None
        return out

    def usage_chunk(self, meta: ResponseMeta, usage: Usage) -> dict[str, Any]:
        obj = "chat.completion.chunk" if meta.kind == "chat" else "text_completion"
        return {
            "id": meta.request_id,
            "object": obj,
            "created": meta.created,
            "model": meta.model,
            "choices": [],
            "usage": self._usage(meta.kind, usage, stream=True),
            "system_fingerprint": self.fingerprint,
        }

    def response(self, meta: ResponseMeta, text: str, finish: str, usage: Usage) -> dict[str, Any]:
        head = {"id": meta.request_id, "object": "", "created": meta.created, "model": meta.model}
        tail = {"kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}
        choice: dict[str, Any] = {"index": 0}
        common = {"service_tier": None, "system_fingerprint": self.fingerprint}
        if meta.kind == "completion":
            head["object"] = "text_completion"
            choice.update(text=text, logprobs=None, finish_reason=finish, stop_reason=None)
            choice.update(token_ids=None, prompt_logprobs=None, prompt_token_ids=None)
            choice["routed_experts"] = None
            usage_body = self._usage("completion", usage, stream=False)
            return {**head, "choices": [choice], **common, "usage": usage_body, **tail}
        head["object"] = "chat.completion"
        choice["message"] = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "reasoning": None,
        }
        choice.update(logprobs=None, finish_reason=finish, stop_reason=None, token_ids=None)
        choice["routed_experts"] = None
        return {
            **head,
            "choices": [choice],
            **common,
            "usage": self._usage("chat", usage, stream=False),
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "prompt_text": None,
            **tail,
        }

    def _error_info(
        self, status: int, err_type: str, message: str, param: str | None = None
    ) -> dict[str, Any]:
        return {"message": message, "type": err_type, "param": param, "code": status}

    def stream_error(self, message: str) -> dict[str, Any]:
        return {"error": self._error_info(500, "InternalServerError", message)}

    def error(self, kind: ErrorKind, message: str, retry_after_s: int) -> ErrorReply:
        return self._reply(kind, message, retry_after_s, None)

    def _reply(
        self, kind: ErrorKind, message: str, retry_after_s: int, param: str | None
    ) -> ErrorReply:
        status, err_type = openai_status(kind)
        body = orjson.dumps({"error": self._error_info(status, err_type, message, param)})
        return ErrorReply(status, body, headers=retry_headers(status, retry_after_s))

    def request_error(self, err: SimRequestError, retry_after_s: int) -> ErrorReply:
        """vLLM names the parameter at fault and repeats it at the end of the message."""
        if isinstance(err, ContextLengthError):
            param, value = _context_param(err)
            message = f"{self.context_message(err)} (parameter={param}, value={value})"
            return self._reply(err.kind, message, retry_after_s, param)
        if err.kind is ErrorKind.NOT_FOUND:
            message = f"{err.message} Valid aliases: {self.config.model}."
            return self._reply(err.kind, message, retry_after_s, err.param)
        if err.param is not None:
            message = f"{err.message} (parameter={err.param}, value={err.value})"
            return self._reply(err.kind, message, retry_after_s, err.param)
        return self._reply(err.kind, err.message, retry_after_s, None)

    def context_message(self, err: ContextLengthError) -> str:
        limit, prompt = err.limit, err.prompt_tokens
        if err.max_tokens > limit:
            return (
                f"max_tokens={err.max_tokens} cannot be greater than max_model_len={limit}. "
                "Please request fewer output tokens."
            )
        if prompt >= limit or err.max_tokens == 0:
            return (
                f"This model's maximum context length is {limit} tokens. However, your prompt "
                f"contains at least {prompt} input tokens, which exceeds this limit even without "
                "any output tokens. Please reduce the length of the input prompt."
            )
        return (
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{err.max_tokens} output tokens and your prompt contains at least {prompt} input "
            f"tokens, for a total of at least {prompt + err.max_tokens} tokens. Please reduce "
            "the length of the input prompt or the number of requested output tokens."
        )

    def models(self) -> dict[str, Any]:
        model = self.config.model
        now = int(time.time())
        permission = {
            "id": f"modelperm-{xxhash.xxh64_hexdigest(self.config.backend_id.encode())}",
            "object": "model_permission",
            "created": now,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        card = {
            "id": model,
            "object": "model",
            "created": now,
            "owned_by": "vllm",
            "root": model,
            "parent": None,
            "max_model_len": self.config.max_model_len,
            "permission": [permission],
        }
        return {"object": "list", "data": [card]}

    def extra_get(self, path: str, engine: SimEngine) -> dict[str, Any] | list[Any] | None:
        if path == "/version":
            return {"version": VLLM_VERSION}
        return None

    def tokenize(self, token_ids: list[int]) -> dict[str, Any]:
        """The `/tokenize` answer for a prompt's token ids."""
        return {
            "count": len(token_ids),
            "max_model_len": self.config.max_model_len,
            "tokens": token_ids,
            "token_strs": None,
        }

    def metrics(self, engine: SimEngine) -> bytes:
        return render_metrics(self.config, engine)


def _context_param(err: ContextLengthError) -> tuple[str, int]:
    if err.max_tokens > err.limit:
        return "max_tokens", err.max_tokens
    return "input_tokens", err.prompt_tokens
