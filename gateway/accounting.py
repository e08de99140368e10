"""Per-request accounting: prompt-cache reads and writes, price, and what the cache saved.

Cache read is what the backend reported as cached (`prompt_tokens_details.cached_tokens`).
Cache write is the engine's own count of newly cached tokens where it reports one
(`created_cache_tokens`), else prompt - cached: what now sits in its cache after this prefill.
A backend that does not say what it had cached gets neither (the whole prompt is input).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.proxy.usage import Usage
from gateway.settings import ModelPricing

PER_MILLION = 1e-6
CACHE_READ_HEADER = b"x-gateway-cache-read-tokens"
CACHE_WRITE_HEADER = b"x-gateway-cache-write-tokens"


@dataclass(slots=True)
class Charge:
    """One answered request's tokens, cache use and price (None: not known)."""

    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    cost_usd: float | None
    savings_usd: float | None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The cache accounting response headers (none when the backend did not say)."""
        if self.cache_read_tokens is None or self.cache_write_tokens is None:
            return []
        return [
            (CACHE_READ_HEADER, str(self.cache_read_tokens).encode()),
            (CACHE_WRITE_HEADER, str(self.cache_write_tokens).encode()),
        ]


def cache_split(usage: Usage) -> tuple[int | None, int | None]:
    """(cache read, cache write) tokens of `usage`; (None, None) when cached is not reported."""
    read = usage.cached_tokens
    prompt = usage.prompt_tokens
    if read is None or prompt is None:
        return None, None
    written = usage.created_cache_tokens
    if written is None:
        written = max(0, prompt - read)
    return read, written


@dataclass(frozen=True, slots=True)
class _Rates:
    """USD per token."""

    input: float
    cache_read: float
    cache_write: float
    output: float


class Prices:
    """The configured `pricing:` per model, turned into a `Charge` per answered request."""

    def __init__(self, pricing: Mapping[str, ModelPricing]) -> None:
        self._rates = {model: _rates(price) for model, price in pricing.items()}

    def charge(self, model: str, usage: Usage) -> Charge | None:
        """The request's charge; None when the usage has no prompt tokens."""
        prompt = usage.prompt_tokens
        if prompt is None:
            return None
        completion = usage.completion_tokens or 0
        read, written = cache_split(usage)
        rates = self._rates.get(model)
        if rates is None:
            return Charge(prompt, completion, read, written, None, None)
        if read is None or written is None:
            cost = prompt * rates.input + completion * rates.output
            return Charge(prompt, completion, read, written, cost, 0.0)
        uncached = max(0, prompt - read - written)
        cost = (
            uncached * rates.input
            + read * rates.cache_read
            + written * rates.cache_write
            + completion * rates.output
        )
        savings = read * (rates.input - rates.cache_read)
        return Charge(prompt, completion, read, written, cost, savings)


def _rates(price: ModelPricing) -> _Rates:
    read = price.input if price.cache_read is None else price.cache_read
    write = price.input if price.cache_write is None else price.cache_write
    m = PER_MILLION
    return _Rates(price.input * m, read * m, write * m, price.output * m)
