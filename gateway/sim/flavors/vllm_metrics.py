"""vLLM 0.32's `/metrics` families that a gateway reads, in vLLM's names, labels and help."""

from __future__ import annotations

from gateway.sim.config import SimBackendConfig
from gateway.sim.engine import SimEngine
from gateway.sim.flavors.prom import Families

_FINISHED = ("stop", "length", "abort", "error", "repetition")


def render_metrics(config: SimBackendConfig, engine: SimEngine) -> bytes:
    """The exposition text of one vLLM engine (engine index 0)."""
    s = engine.stats
    base = {"engine": "0", "model_name": config.model}
    out = Families(created=engine.started_at)
    out.process_start(engine.started_at)
    out.gauge(
        "vllm:num_requests_running", "Number of requests in model execution batches.",
        [(base, s.requests_running)],
    )  # fmt: skip
    out.gauge(
        "vllm:num_requests_waiting", "Number of requests waiting to be processed.",
        [(base, s.requests_waiting)],
    )  # fmt: skip
    out.gauge(
        "vllm:num_requests_waiting_by_reason",
        "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
        "scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV "
        "transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
        [({**base, "reason": "capacity"}, s.requests_waiting), ({**base, "reason": "deferred"}, 0)],
    )  # fmt: skip
    out.gauge(
        "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
        [(base, engine.kv_usage)],
    )  # fmt: skip
    out.counter(
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        [(base, s.prefix_cache_queries_tokens)],
    )
    out.counter(
        "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
        [(base, s.prefix_cache_hits_tokens)],
    )  # fmt: skip
    out.counter(
        "vllm:num_preemptions", "Cumulative number of preemption from the engine.", [(base, 0)]
    )
    out.counter(
        "vllm:prompt_tokens", "Number of prefill tokens processed.",
        [(base, s.prompt_tokens_total)],
    )  # fmt: skip
    computed = s.prompt_tokens_total - s.prefix_cache_hits_tokens
    out.counter(
        "vllm:prompt_tokens_by_source", "Number of prompt tokens by source.",
        [
            ({**base, "source": "local_compute"}, computed),
            ({**base, "source": "local_cache_hit"}, s.prefix_cache_hits_tokens),
            ({**base, "source": "external_kv_transfer"}, 0),
        ],
    )  # fmt: skip
    out.counter(
        "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).",
        [(base, s.prefix_cache_hits_tokens)],
    )  # fmt: skip
    out.counter(
        "vllm:generation_tokens", "Number of generation tokens processed.",
        [(base, s.generation_tokens_total)],
    )  # fmt: skip
    finished = {
        "stop": s.success_stop_total,
        "length": s.success_length_total,
        "abort": s.cancelled_total,
    }
    out.counter(
        "vllm:request_success", "Count of successfully processed requests.",
        [({**base, "finished_reason": r}, finished.get(r, 0)) for r in _FINISHED],
    )  # fmt: skip
    out.gauge(
        "vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
        [(cache_config_labels(config), 1.0)],
    )  # fmt: skip
    return out.render()


def cache_config_labels(config: SimBackendConfig) -> dict[str, str]:
    """CacheConfig.metrics_info() of vLLM 0.32 plus `engine`: every value as str()."""
    capacity = config.kv_capacity_tokens
    info: dict[str, object] = {
        "_block_size_resolved": True,
        "block_size": config.block_size,
        "cache_dtype": "auto",
        "cache_hit_alignment_tokens": None,
        "effective_attention_block_size": config.block_size,
        "enable_mamba_shared_prefix_checkpoint": False,
        "enable_prefix_caching": True,
        "engine": 0,
        "gpu_memory_utilization": 0.92,
        "hash_block_size": None,
        "is_attention_free": False,
        "kv_cache_dtype_skip_layers": [],
        "kv_cache_layout": None,
        "kv_cache_max_concurrency": capacity / config.max_model_len,
        "kv_cache_memory_bytes": capacity * 131072,  # 128 KiB a token: an 8B model in bf16
        "kv_cache_size_tokens": capacity,
        "kv_offloading_backend": "native",
        "kv_offloading_size": None,
        "kv_sharing_fast_prefill": False,
        "mamba_block_size": None,
        "mamba_cache_dtype": "auto",
        "mamba_cache_mode": "none",
        "mamba_page_size_padded": None,
        "mamba_ssm_cache_dtype": "auto",
        "num_cpu_blocks": None,
        "num_gpu_blocks": config.cache_capacity_blocks,
        "num_gpu_blocks_override": None,
        "prefix_cache_retention_interval": 0,
        "prefix_caching_hash_algo": "sha256",
        "prefix_match_unit": None,
        "replayssm_buffer_len": 16,
        "skip_page_size_padded": None,
        "sliding_window": None,
        "swa_bounded_replay": True,
        "use_kda_recoverssm": False,
        "use_replayssm": False,
        "user_specified_block_size": True,
    }
    return {key: str(value) for key, value in info.items()}
