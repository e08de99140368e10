"""Deterministic pseudo-word text sized in simulator tokens (4 UTF-8 bytes per token)."""

from __future__ import annotations

import random

from gateway.sim.tokens import BYTES_PER_TOKEN

_SYLLABLES = tuple(c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou")
_BATCH = 64


class PseudoText:
    """Makes ASCII pseudo-word text whose length is an exact number of simulator tokens.

    `text(key, n)` is a pure function of (seed, key, n), and `text(key, n)` is a prefix of
    `text(key, m)` for n <= m, so equal keys give equal text and hence equal prefix blocks.
    """

    def __init__(self, seed: int, vocabulary_size: int = 4096) -> None:
        rng = random.Random(f"pseudo-vocabulary:{seed}")
        words = {_word(rng) for _ in range(vocabulary_size * 2)}
        self._words = tuple(sorted(words))[:vocabulary_size]
        self._seed = seed

    def text(self, key: str, n_tokens: int) -> str:
        """Exactly `n_tokens` tokens (4 * n_tokens ASCII bytes) of words drawn for `key`."""
        if n_tokens <= 0:
            return ""
        need = n_tokens * BYTES_PER_TOKEN
        rng = random.Random(f"{self._seed}:{key}")
        pieces: list[str] = []
        size = -1
        while size < need:
            batch = rng.choices(self._words, k=_BATCH)
            pieces.extend(batch)
            size += sum(len(w) + 1 for w in batch)
        return " ".join(pieces)[:need]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))


def token_count(text: str) -> int:
    """Simulator tokens of a text (a shorter tail counts as one token)."""
    return -(-len(text.encode()) // BYTES_PER_TOKEN)
