"""Per-engine adapters: only what differs between vLLM, SGLang, TGI and plain OpenAI servers."""

from __future__ import annotations

from gateway.fleet.adapters.base import EngineAdapter
from gateway.settings import EngineKind


class VllmAdapter(EngineAdapter):
    """vLLM's OpenAI-compatible server (nested or flat errors with an integer code)."""

    kind = "vllm"
    running_metrics = ("vllm:num_requests_running",)
    waiting_metrics = ("vllm:num_requests_waiting",)
    kv_usage_metrics = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    lifetime_counters = ("vllm:prompt_tokens_total", "vllm:request_success_total")


class SglangAdapter(EngineAdapter):
    """SGLang's server (flat errors like older vLLM)."""

    kind = "sglang"
    running_metrics = ("sglang:num_running_reqs",)
    waiting_metrics = ("sglang:num_queue_reqs",)
    kv_usage_metrics = ("sglang:token_usage",)
    lifetime_counters = ("sglang:prompt_tokens_total", "sglang:num_requests_total")


class TgiAdapter(EngineAdapter):
    """Text Generation Inference (flat `{error, error_type}` errors, 422/424 statuses)."""

    kind = "tgi"
    running_metrics = ("tgi_batch_current_size",)
    waiting_metrics = ("tgi_queue_size",)
    lifetime_counters = ("tgi_request_count",)


class OpenAIAdapter(EngineAdapter):
    """Any other OpenAI-compatible server; health is probed through `/v1/models`."""

    kind = "openai"
    health_path = "/v1/models"
    metrics_path = None


def adapter_for(kind: EngineKind) -> EngineAdapter:
    """The adapter for an engine kind."""
    adapters: dict[str, type[EngineAdapter]] = {
        "vllm": VllmAdapter,
        "sglang": SglangAdapter,
        "tgi": TgiAdapter,
        "openai": OpenAIAdapter,
    }
    return adapters[kind]()
