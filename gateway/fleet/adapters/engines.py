"""Per-engine adapters: only what differs between vLLM, SGLang, TGI and plain OpenAI servers."""

from __future__ import annotations

from gateway.fleet.adapters.base import EngineAdapter
from gateway.settings import EngineKind


class VllmAdapter(EngineAdapter):
    """vLLM's OpenAI-compatible server (nested or flat errors with an integer code)."""

    kind = "vllm"


class SglangAdapter(EngineAdapter):
    """SGLang's server (flat errors like older vLLM)."""

    kind = "sglang"


class TgiAdapter(EngineAdapter):
    """Text Generation Inference (flat `{error, error_type}` errors, 422/424 statuses)."""

    kind = "tgi"


class OpenAIAdapter(EngineAdapter):
    """Any other OpenAI-compatible server; health is probed through `/v1/models`."""

    kind = "openai"
    health_path = "/v1/models"


def adapter_for(kind: EngineKind) -> EngineAdapter:
    """The adapter for an engine kind."""
    adapters: dict[str, type[EngineAdapter]] = {
        "vllm": VllmAdapter,
        "sglang": SglangAdapter,
        "tgi": TgiAdapter,
        "openai": OpenAIAdapter,
    }
    return adapters[kind]()
