"""Per-engine wire formats of the simulator (vLLM, SGLang, TGI)."""

from __future__ import annotations

from gateway.sim.config import SimBackendConfig
from gateway.sim.flavors.base import ErrorReply, Flavor, ResponseMeta, StreamTemplate, Usage
from gateway.sim.flavors.sglang import SglangFlavor
from gateway.sim.flavors.tgi import TgiFlavor
from gateway.sim.flavors.vllm import VllmFlavor

__all__ = [
    "ErrorReply",
    "Flavor",
    "ResponseMeta",
    "SglangFlavor",
    "StreamTemplate",
    "TgiFlavor",
    "Usage",
    "VllmFlavor",
    "make_flavor",
]


def make_flavor(config: SimBackendConfig) -> Flavor:
    """The formatter for a backend's configured flavor."""
    if config.flavor == "vllm":
        return VllmFlavor(config)
    if config.flavor == "sglang":
        return SglangFlavor(config)
    return TgiFlavor(config)
