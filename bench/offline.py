"""Offline replays over the simulator's prefix blocks: distinct blocks, upper bound, round-robin."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.tokens import SimTokenizer
from bench.workloads import BenchRequest
from gateway.sim.kvcache import PrefixKVCache


@dataclass(frozen=True, slots=True)
class PromptBlocks:
    """A request's prompt as the simulator sees it: token count and chained block hashes."""

    n_tokens: int
    hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class HitCount:
    """Prefix-cache accounting of a replay: prompt tokens, cached tokens, uncached tokens."""

    query_tokens: int
    hit_tokens: int

    @property
    def miss_tokens(self) -> int:
        """Tokens that had to be prefilled."""
        return self.query_tokens - self.hit_tokens

    @property
    def hit_rate(self) -> float:
        """Cached fraction of prompt tokens."""
        return self.hit_tokens / self.query_tokens if self.query_tokens else 0.0


def prompt_blocks(
    request: BenchRequest, block_size: int, tokenizer: SimTokenizer | None = None
) -> PromptBlocks:
    """Render a chat request like the simulator and hash its full token blocks."""
    prompt = (tokenizer or SimTokenizer()).chat(request.messages, block_size)
    return PromptBlocks(prompt.n_tokens, prompt.hashes)


def all_blocks(
    requests: Iterable[BenchRequest], block_size: int, tokenizer: SimTokenizer | None = None
) -> list[PromptBlocks]:
    """prompt_blocks() of every request, in the given order."""
    return [prompt_blocks(r, block_size, tokenizer) for r in requests]


def distinct_blocks(prompts: Iterable[PromptBlocks]) -> int:
    """Number of different blocks over all prompts."""
    seen: set[int] = set()
    for p in prompts:
        seen.update(p.hashes)
    return len(seen)


def cached_blocks(matched: int, n_tokens: int, block_size: int) -> int:
    """Blocks an engine reuses: at most all but the last token's block must be computed."""
    return min(matched, (n_tokens - 1) // block_size)


def upper_bound(prompts: Sequence[PromptBlocks], block_size: int) -> HitCount:
    """Hits with one infinite cache replaying the prompts in order."""
    seen: set[int] = set()
    hits = 0
    queries = 0
    for p in prompts:
        matched = 0
        for h in p.hashes:
            if h not in seen:
                break
            matched += 1
        hits += cached_blocks(matched, p.n_tokens, block_size) * block_size
        queries += p.n_tokens
        seen.update(p.hashes)
    return HitCount(queries, hits)


def round_robin(
    prompts: Sequence[PromptBlocks], backends: int, capacity_blocks: int, block_size: int
) -> HitCount:
    """Hits when prompts go round-robin to `backends` LRU caches like the simulator's."""
    caches = [PrefixKVCache(capacity_blocks) for _ in range(backends)]
    hits = 0
    queries = 0
    for i, p in enumerate(prompts):
        cache = caches[i % backends]
        matched = cached_blocks(cache.match(p.hashes), p.n_tokens, block_size)
        hits += matched * block_size
        queries += p.n_tokens
        cache.insert(p.hashes)
    return HitCount(queries, hits)
