"""Configuration of one simulated backend and its run-time fault switches."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

FlavorName = Literal["vllm", "sglang", "tgi"]
FLAVORS: tuple[FlavorName, ...] = get_args(FlavorName)

SchedulerName = Literal["batched", "fifo"]
SCHEDULERS: tuple[SchedulerName, ...] = get_args(SchedulerName)

FaultName = Literal["error", "429", "503", "abort_midstream", "midstream_error", "slow_first_token"]
FAULT_NAMES: tuple[FaultName, ...] = get_args(FaultName)

DEFAULT_SLOW_FIRST_TOKEN_S = 1.0


@dataclass(frozen=True, slots=True)
class SimBackendConfig:
    """Static description of one simulated model server (engine flavor, cache, speed).

    `scheduler` "batched" steps like vLLM's v1 scheduler: each step gives every running decode
    one token, then chunk-prefills waiting requests FIFO within `max_num_batched_tokens`, and
    lasts prefill_tokens / prefill_tokens_per_s + decode_s_per_token * (1 +
    decode_batch_slowdown * (batch - 1)) when it decodes (all scaled by time_scale). "fifo" is
    the old model: one prefill at a time, decodes free of each other.
    """

    backend_id: str = "sim-0"
    flavor: FlavorName = "vllm"
    model: str = "sim-llama-8b"
    max_model_len: int = 32768
    block_size: int = 16
    cache_capacity_blocks: int = 8192
    prefill_tokens_per_s: float = 20000.0
    decode_s_per_token: float = 0.02
    time_scale: float = 1.0
    default_max_tokens: int = 16
    report_cached_tokens: bool = True
    seed: int = 0
    bytes_per_token: float = 4.4
    scheduler: SchedulerName = "batched"
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    decode_batch_slowdown: float = 0.03
    tgi_version: str = "3.3.4"

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {self.flavor!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        for name in (
            "max_model_len", "block_size", "cache_capacity_blocks", "default_max_tokens",
            "max_num_batched_tokens", "max_num_seqs",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.prefill_tokens_per_s <= 0:
            raise ValueError("prefill_tokens_per_s must be > 0")
        if self.decode_s_per_token < 0 or self.time_scale < 0:
            raise ValueError("decode_s_per_token and time_scale must be >= 0")
        if self.decode_batch_slowdown < 0:
            raise ValueError("decode_batch_slowdown must be >= 0")
        if not self.bytes_per_token >= 1:
            raise ValueError("bytes_per_token must be >= 1")
        if not self.tgi_version[:1].isdigit():
            raise ValueError("tgi_version must look like 3.3.4")

    @property
    def zero_latency(self) -> bool:
        """True when every simulated delay is skipped."""
        return self.time_scale == 0

    @property
    def kv_capacity_tokens(self) -> int:
        """KV cache capacity in tokens, as the engines report it."""
        return self.cache_capacity_blocks * self.block_size

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view of the configuration."""
        return dataclasses.asdict(self)


_RATE_FIELDS = (
    "error_rate",
    "status_429_rate",
    "status_503_rate",
    "abort_midstream_rate",
    "midstream_error_rate",
)


@dataclass(slots=True)
class SimFaults:
    """Fault switches of one backend; mutable while it runs (see POST /sim/faults).

    Rates are probabilities in [0, 1] drawn from the backend's seeded generator.
    `slow_first_token_s` is wall-clock seconds (not scaled by time_scale) added before the
    first token of every request. `retry_after_s` is the Retry-After sent with vLLM/SGLang
    429/503 answers (0 = no header; TGI never sends one).
    """

    error_rate: float = 0.0
    status_429_rate: float = 0.0
    status_503_rate: float = 0.0
    abort_midstream_rate: float = 0.0
    midstream_error_rate: float = 0.0
    slow_first_token_s: float = 0.0
    loading: bool = False
    tgi_keepalive: bool = False
    tgi_no_space: bool = False
    retry_after_s: int = 1
    _any_rate: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.update(self.to_dict())

    @property
    def any_rate(self) -> bool:
        """True when at least one random fault rate is non-zero."""
        return self._any_rate

    def update(self, values: Mapping[str, Any]) -> None:
        """Validate and apply a partial update; raises ValueError naming the bad field."""
        known = {f.name: f for f in dataclasses.fields(self) if not f.name.startswith("_")}
        staged: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown fault field: {key}")
            staged[key] = _coerce(key, value, known[key].type)
        for key, value in staged.items():
            setattr(self, key, value)
        self._any_rate = any(getattr(self, name) > 0 for name in _RATE_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view of the switches."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name[0] != "_"}


def _coerce(key: str, value: Any, type_name: Any) -> Any:
    if type_name in (bool, "bool"):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    if type_name in (int, "int"):
        if int(value) != value or value < 0:
            raise ValueError(f"{key} must be a non-negative integer")
        return int(value)
    if value < 0 or (key in _RATE_FIELDS and value > 1):
        raise ValueError(f"{key} out of range")
    return float(value)
