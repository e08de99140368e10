"""Per-engine adapters: only what differs between vLLM, SGLang, TGI and plain OpenAI servers."""

from __future__ import annotations

from typing import Any

from gateway.fleet.adapters.base import EngineAdapter, EngineCache, EngineLimits, positive_int
from gateway.fleet.promtext import collect_labels
from gateway.settings import EngineKind

PROCESS_START = ("process_start_time_seconds",)


class VllmAdapter(EngineAdapter):
    """vLLM's OpenAI-compatible server (nested or flat errors with an integer code)."""

    kind = "vllm"
    accepts_priority = True
    running_metrics = ("vllm:num_requests_running",)
    waiting_metrics = ("vllm:num_requests_waiting",)
    kv_usage_metrics = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    lifetime_counters = ("vllm:prompt_tokens_total", "vllm:request_success_total")
    start_time_metrics = PROCESS_START

    def parse_cache(self, metrics_text: str) -> EngineCache | None:
        """`vllm:cache_config_info` labels: `num_gpu_blocks` times `block_size` tokens."""
        for labels in collect_labels(metrics_text, "vllm:cache_config_info"):
            block = positive_int(labels.get("block_size"))
            tokens = positive_int(labels.get("kv_cache_size_tokens"))
            blocks = positive_int(labels.get("num_gpu_blocks"))
            if tokens is None and blocks is not None and block is not None:
                tokens = blocks * block
            if tokens is not None or block is not None:
                return EngineCache(tokens, block)
        return None


class SglangAdapter(EngineAdapter):
    """SGLang's server (flat errors like older vLLM)."""

    kind = "sglang"
    running_metrics = ("sglang:num_running_reqs",)
    waiting_metrics = ("sglang:num_queue_reqs",)
    kv_usage_metrics = ("sglang:token_usage",)
    lifetime_counters = ("sglang:prompt_tokens_total", "sglang:num_requests_total")
    start_time_metrics = PROCESS_START
    info_path = "/get_server_info"

    def parse_info(self, info: Any) -> EngineCache | None:
        """`max_total_num_tokens` (the token pool), at the top or per data-parallel rank."""
        if not isinstance(info, dict):
            return None
        tokens = positive_int(info.get("max_total_num_tokens"))
        if tokens is None:
            ranks = info.get("internal_states")
            if isinstance(ranks, list):
                found = [
                    positive_int(r.get("max_total_num_tokens"))
                    for r in ranks
                    if isinstance(r, dict)
                ]
                tokens = sum(t for t in found if t) or None
        block = positive_int(info.get("page_size"))
        return EngineCache(tokens, block) if tokens is not None else None


class TgiAdapter(EngineAdapter):
    """Text Generation Inference (flat `{error, error_type}` errors, 422/424 statuses)."""

    kind = "tgi"
    running_metrics = ("tgi_batch_current_size",)
    waiting_metrics = ("tgi_queue_size",)
    lifetime_counters = ("tgi_request_count",)
    info_path = "/info"

    def parse_info(self, info: Any) -> EngineCache | None:
        """`max_batch_total_tokens`: the tokens its KV cache holds across a batch."""
        if not isinstance(info, dict):
            return None
        tokens = positive_int(info.get("max_batch_total_tokens"))
        return EngineCache(tokens, None) if tokens is not None else None

    def parse_limits(self, info: Any) -> EngineLimits | None:
        """`max_total_tokens` (prompt + output of one request), `max_concurrent_requests`
        (beyond it TGI answers 429 "Model is overloaded")."""
        if not isinstance(info, dict):
            return None
        window = positive_int(info.get("max_total_tokens"))
        concurrency = positive_int(info.get("max_concurrent_requests"))
        if window is None and concurrency is None:
            return None
        return EngineLimits(window, concurrency)


class LlamaCppAdapter(EngineAdapter):
    """llama.cpp's llama-server (OpenAI-shaped errors; `/props` describes its slots, and
    `/metrics` needs `--metrics`)."""

    kind = "llamacpp"
    running_metrics = ("llamacpp:requests_processing",)
    waiting_metrics = ("llamacpp:requests_deferred",)
    kv_usage_metrics = ("llamacpp:kv_cache_usage_ratio",)
    lifetime_counters = ("llamacpp:prompt_tokens_total",)
    info_path = "/props"

    def parse_limits(self, info: Any) -> EngineLimits | None:
        """`default_generation_settings.n_ctx` (one slot's context) and `total_slots`
        (requests decoded at once; more wait inside the server)."""
        if not isinstance(info, dict):
            return None
        settings = info.get("default_generation_settings")
        window = positive_int(settings.get("n_ctx")) if isinstance(settings, dict) else None
        slots = positive_int(info.get("total_slots"))
        if window is None and slots is None:
            return None
        return EngineLimits(window, slots)


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
        "llamacpp": LlamaCppAdapter,
        "openai": OpenAIAdapter,
    }
    return adapters[kind]()
