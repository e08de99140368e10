"""SGLang dialect: bare hex ids, matched_stop, flat errors, /get_load."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from gateway.sim.engine import SimEngine
from gateway.sim.flavors.base import (
    ErrorReply,
    Flavor,
    ResponseMeta,
    Usage,
    openai_status,
    retry_headers,
)
from gateway.sim.flavors.prom import Families
from gateway.sim.request import ContextLengthError, ErrorKind, RequestKind

EOS_TOKEN_ID = 128009
SGLANG_VERSION = "0.5.4"


class SglangFlavor(Flavor):
    """Formats of SGLang's OpenAI-compatible server (full pydantic dumps, nulls included)."""

    name = "sglang"
    owned_by = "sglang"
    cache_reset_path = "/flush_cache"

    def request_id(self, kind: RequestKind, rng: random.Random) -> str:
        return f"{rng.getrandbits(128):032x}"

    def role_delta(self) -> dict[str, Any] | None:
        return {"role": "assistant", "content": "", "reasoning_content": None, "tool_calls": None}

    def content_delta(self, text: str) -> dict[str, Any]:
        return {"role": None, "content": text, "reasoning_content": None, "tool_calls": None}

    def _matched_stop(self, finish: str | None) -> int | None:
        return EOS_TOKEN_ID if finish == "stop" else None

    def _chunk(self, meta: ResponseMeta, choices: list[Any], usage: Any) -> dict[str, Any]:
        obj = "chat.completion.chunk" if meta.kind == "chat" else "text_completion"
        return {
            "id": meta.request_id,
            "object": obj,
            "created": meta.created,
            "model": meta.model,
            "choices": choices,
            "usage": usage,
        }

    def chat_chunk(
        self, meta: ResponseMeta, delta: dict[str, Any], finish: str | None
    ) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
            "matched_stop": self._matched_stop(finish),
        }
        return self._chunk(meta, [choice], None)

    def completion_chunk(self, meta: ResponseMeta, text: str, finish: str | None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish,
            "matched_stop": self._matched_stop(finish),
        }
        return self._chunk(meta, [choice], None)

    def _usage(self, usage: Usage) -> dict[str, Any]:
        details = (
            {"cached_tokens": usage.cached_tokens} if self.config.report_cached_tokens else None
        )
        return {
            "prompt_tokens": usage.prompt_tokens,
            "total_tokens": usage.total_tokens,
            "completion_tokens": usage.completion_tokens,
            "prompt_tokens_details": details,
        }

    def usage_chunk(self, meta: ResponseMeta, usage: Usage) -> dict[str, Any]:
        return self._chunk(meta, [], self._usage(usage))

    def response(self, meta: ResponseMeta, text: str, finish: str, usage: Usage) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if meta.kind == "chat":
            choice["message"] = {
                "role": "assistant",
                "content": text,
                "reasoning_content": None,
                "tool_calls": None,
            }
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason=finish, matched_stop=self._matched_stop(finish))
        return {
            "id": meta.request_id,
            "object": "chat.completion" if meta.kind == "chat" else "text_completion",
            "created": meta.created,
            "model": meta.model,
            "choices": [choice],
            "usage": self._usage(usage),
        }

    def _flat(self, status: int, err_type: str, message: str) -> dict[str, Any]:
        return {
            "object": "error",
            "message": message,
            "type": err_type,
            "param": None,
            "code": status,
        }

    def stream_error(self, message: str) -> dict[str, Any]:
        return {"error": self._flat(500, "InternalServerError", message)}

    def error(self, kind: ErrorKind, message: str, retry_after_s: int) -> ErrorReply:
        status, err_type = openai_status(kind)
        body = orjson.dumps(self._flat(status, err_type, message))
        return ErrorReply(status, body, headers=retry_headers(status, retry_after_s))

    def context_message(self, err: ContextLengthError) -> str:
        if err.prompt_tokens >= err.limit:
            return (
                f"Input length ({err.prompt_tokens} tokens) exceeds the maximum allowed length "
                f"({err.limit} tokens). Use a shorter input or enable --allow-auto-truncate."
            )
        total = err.prompt_tokens + err.max_tokens
        return (
            "Requested token count exceeds the model's maximum context length of "
            f"{err.limit} tokens. You requested a total of {total} tokens: {err.prompt_tokens} "
            f"tokens from the input messages and {err.max_tokens} tokens for the completion. "
            "Please reduce the number of tokens in the input messages or the completion to fit "
            "within the limit."
        )

    def models(self) -> dict[str, Any]:
        model = self.config.model
        card = {
            "id": model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sglang",
            "root": model,
            "parent": None,
            "max_model_len": self.config.max_model_len,
        }
        return {"object": "list", "data": [card]}

    def extra_get(self, path: str, engine: SimEngine) -> dict[str, Any] | list[Any] | None:
        s = engine.stats
        if path == "/get_load":
            return [
                {
                    "dp_rank": 0,
                    "num_reqs": s.requests_running + s.requests_waiting,
                    "num_waiting_reqs": s.requests_waiting,
                    "num_tokens": s.active_blocks * self.config.block_size,
                    "num_pending_tokens": s.waiting_prompt_tokens,
                    "ts_tic": time.time(),
                }
            ]
        if path == "/get_model_info":
            model = self.config.model
            return {"model_path": model, "tokenizer_path": model, "is_generation": True}
        if path in ("/get_server_info", "/server_info"):  # the old name still answers
            return self.server_info(engine)
        return None

    def server_info(self, engine: SimEngine) -> dict[str, Any]:
        """`/server_info`: server args, then the scheduler's info, per-rank states, version."""
        c = self.config
        capacity = c.kv_capacity_tokens
        args: dict[str, Any] = {
            "model_path": c.model,
            "tokenizer_path": c.model,
            "tokenizer_mode": "auto",
            "skip_tokenizer_init": False,
            "load_format": "auto",
            "trust_remote_code": False,
            "dtype": "auto",
            "kv_cache_dtype": "auto",
            "quantization": None,
            "served_model_name": c.model,
            "chat_template": None,
            "is_embedding": False,
            "revision": None,
            "host": "127.0.0.1",
            "port": 30000,
            "mem_fraction_static": 0.88,
            "max_running_requests": c.max_num_seqs,
            "max_total_tokens": None,
            "chunked_prefill_size": c.max_num_batched_tokens,
            "max_prefill_tokens": 16384,
            "schedule_policy": "fcfs",
            "schedule_conservativeness": 1.0,
            "page_size": c.block_size,
            "context_length": c.max_model_len,
            "tp_size": 1,
            "dp_size": 1,
            "random_seed": c.seed,
            "disable_radix_cache": False,
            "enable_metrics": True,
            "enable_cache_report": c.report_cached_tokens,
        }
        state = {
            "attention_backend": "flashinfer",
            "chunked_prefill_size": c.max_num_batched_tokens,
            "last_gen_throughput": 0.0,
            "memory_usage": {
                "weight": 15.06,
                "kvcache": round(capacity * 131072 / 2**30, 2),  # 128 KiB per token, 8B bf16
                "token_capacity": capacity,
                "cuda_graph": 0.55,
            },
        }
        return {
            **args,
            "status": "ready",
            "max_total_num_tokens": capacity,
            "max_req_input_len": min(c.max_model_len, capacity) - 1,
            "internal_states": [state],
            "version": SGLANG_VERSION,
        }

    def metrics(self, engine: SimEngine) -> bytes:
        s = engine.stats
        labels = {"model_name": self.config.model}
        out = Families(created=engine.started_at)
        out.process_start(engine.started_at)
        used = s.active_blocks * self.config.block_size
        gauges = (
            ("num_running_reqs", "The number of running requests.", s.requests_running),
            ("num_queue_reqs", "The number of requests in the waiting queue.", s.requests_waiting),
            ("num_used_tokens", "The number of used tokens.", used),
            ("token_usage", "The token usage.", engine.kv_usage),
            ("cache_hit_rate", "The prefix cache hit rate.", engine.recent_hit_rate),
            ("gen_throughput", "The generation throughput (token/s).", 0.0),
            ("num_grammar_queue_reqs", "The number of requests in the grammar queue.", 0),
        )
        for name, help_text, value in gauges:
            out.gauge(f"sglang:{name}", help_text, [(labels, value)])
        counters = (
            ("prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens_total),
            ("generation_tokens", "Number of generation tokens.", s.generation_tokens_total),
            ("cached_tokens", "Number of cached prompt tokens.", s.prefix_cache_hits_tokens),
            ("num_requests", "Number of requests processed.", s.success_total),
        )
        for name, help_text, value in counters:
            out.counter(f"sglang:{name}", help_text, [(labels, value)])
        return out.render()
