"""vLLM OpenAI-server dialect: role-only first chunk, stop_reason, nested int-code errors."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.sim.engine import SimEngine
from gateway.sim.flavors.base import (
    ErrorReply,
    Flavor,
    PromText,
    ResponseMeta,
    Usage,
    openai_status,
    retry_headers,
)
from gateway.sim.request import ContextLengthError, ErrorKind

VLLM_VERSION = "0.11.0"


class VllmFlavor(Flavor):
    """Formats of vLLM's OpenAI-compatible server (exclude_unset chunks, ErrorInfo errors)."""

    name = "vllm"
    owned_by = "vllm"
    cache_reset_path = "/reset_prefix_cache"

    def role_delta(self) -> dict[str, Any] | None:
        return {"role": "assistant", "content": ""}

    def content_delta(self, text: str) -> dict[str, Any]:
        return {"content": text}

    def chat_chunk(
        self, meta: ResponseMeta, delta: dict[str, Any], finish: str | None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        if finish is not None:
            choice["stop_reason"] = None
        return {
            "id": meta.request_id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "choices": [choice],
        }

    def completion_chunk(self, meta: ResponseMeta, text: str, finish: str | None) -> dict[str, Any]:
        return {
            "id": meta.request_id,
            "object": "text_completion",
            "created": meta.created,
            "model": meta.model,
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
            ],
            "usage": None,
        }

    def _usage(self, usage: Usage, *, stream: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": usage.prompt_tokens,
            "total_tokens": usage.total_tokens,
            "completion_tokens": usage.completion_tokens,
        }
        if self.config.report_cached_tokens and usage.cached_tokens > 0:
            out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
        elif not stream:
            out["prompt_tokens_details"] = None
        return out

    def usage_chunk(self, meta: ResponseMeta, usage: Usage) -> dict[str, Any]:
        obj = "chat.completion.chunk" if meta.kind == "chat" else "text_completion"
        return {
            "id": meta.request_id,
            "object": obj,
            "created": meta.created,
            "model": meta.model,
            "choices": [],
            "usage": self._usage(usage, stream=True),
        }

    def response(self, meta: ResponseMeta, text: str, finish: str, usage: Usage) -> dict[str, Any]:
        head = {"id": meta.request_id, "object": "", "created": meta.created, "model": meta.model}
        choice: dict[str, Any] = {"index": 0}
        if meta.kind == "completion":
            head["object"] = "text_completion"
            choice.update(text=text, logprobs=None, finish_reason=finish, stop_reason=None)
            choice["prompt_logprobs"] = None
            return {
                **head,
                "choices": [choice],
                "usage": self._usage(usage, stream=False),
                "kv_transfer_params": None,
            }
        head["object"] = "chat.completion"
        choice["message"] = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": [],
            "reasoning_content": None,
        }
        choice.update(logprobs=None, finish_reason=finish, stop_reason=None)
        return {
            **head,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": self._usage(usage, stream=False),
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        }

    def _error_info(self, status: int, err_type: str, message: str) -> dict[str, Any]:
        return {"message": message, "type": err_type, "param": None, "code": status}

    def stream_error(self, message: str) -> dict[str, Any]:
        return {"error": self._error_info(500, "InternalServerError", message)}

    def error(self, kind: ErrorKind, message: str, retry_after_s: int) -> ErrorReply:
        status, err_type = openai_status(kind)
        body = orjson.dumps({"error": self._error_info(status, err_type, message)})
        return ErrorReply(status, body, headers=retry_headers(status, retry_after_s))

    def context_message(self, err: ContextLengthError) -> str:
        if err.max_tokens == 0:
            return (
                f"This model's maximum context length is {err.limit} tokens. However, your "
                f"request has {err.prompt_tokens} input tokens. Please reduce the length of the "
                "input messages."
            )
        total = err.prompt_tokens + err.max_tokens
        return (
            f"This model's maximum context length is {err.limit} tokens. However, you requested "
            f"{total} tokens ({err.prompt_tokens} in the messages, {err.max_tokens} in the "
            "completion). Please reduce the length of the messages or completion."
        )

    def models(self) -> dict[str, Any]:
        model = self.config.model
        now = int(time.time())
        permission = {
            "id": f"modelperm-{self.config.backend_id}",
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

    def _cache_config_labels(self) -> str:
        """CacheConfig.metrics_info() of vLLM 0.11 plus `engine`: every value a str()."""
        c = self.config
        info = {
            "block_size": c.block_size,
            "cache_dtype": "auto",
            "calculate_kv_scales": False,
            "cpu_offload_gb": 0,
            "enable_prefix_caching": True,
            "engine": 0,
            "gpu_memory_utilization": 0.9,
            "is_attention_free": False,
            "kv_cache_memory_bytes": None,
            "kv_sharing_fast_prefill": False,
            "mamba_cache_dtype": "auto",
            "mamba_page_size_padded": None,
            "mamba_ssm_cache_dtype": "auto",
            "num_cpu_blocks": 0,
            "num_gpu_blocks": c.cache_capacity_blocks,
            "num_gpu_blocks_override": None,
            "prefix_caching_hash_algo": "sha256",
            "sliding_window": None,
            "swap_space": 4,
        }  # sorted by name, as prometheus_client's multiprocess collector writes them
        return ",".join(f'{key}="{value}"' for key, value in info.items())

    def extra_get(self, path: str, engine: SimEngine) -> dict[str, Any] | list[Any] | None:
        if path == "/version":
            return {"version": VLLM_VERSION}
        return None

    def metrics(self, engine: SimEngine) -> bytes:
        s = engine.stats
        labels = f'model_name="{self.config.model}",engine="0"'
        out = PromText()
        out.process_start(engine.started_at)
        out.family(
            "vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig", 1.0,
            self._cache_config_labels(),
        )  # fmt: skip
        gauges = (
            ("num_requests_running", "Requests in model execution batches.", s.requests_running),
            ("num_requests_waiting", "Requests waiting to be processed.", s.requests_waiting),
            ("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent.", engine.kv_usage),
        )
        for name, help_text, value in gauges:
            out.family(f"vllm:{name}", "gauge", help_text, value, labels)
        counters = (
            (
                "prefix_cache_queries",
                "Prefix cache queries, in tokens.",
                s.prefix_cache_queries_tokens,
            ),
            ("prefix_cache_hits", "Prefix cache hits, in tokens.", s.prefix_cache_hits_tokens),
            ("num_preemptions", "Cumulative number of preemptions.", 0),
            ("prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens_total),
            ("generation_tokens", "Number of generation tokens.", s.generation_tokens_total),
        )
        for name, help_text, value in counters:
            out.family(f"vllm:{name}", "counter", help_text, value, labels, "_total")
        name = "vllm:request_success"
        out.family(
            name, "counter", "Count of successfully processed requests.",
            s.success_stop_total, f'{labels},finished_reason="stop"', "_total",
        )  # fmt: skip
        out.sample(f"{name}_total", s.success_length_total, f'{labels},finished_reason="length"')
        out.sample(f"{name}_total", s.cancelled_total, f'{labels},finished_reason="abort"')
        return out.render()
