"""Deterministic pseudo-word text sized in tokens of the simulator's tokenizer."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from bench.tokens import SimTokenizer

_SYLLABLES = tuple(c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou")
_BATCH = 64
_MARGIN = 1.5  # generate this many times the bytes the mean ratio predicts, plus a batch


class Counter(Protocol):
    """What the generator needs of a tokenizer: its mean ratio and a token count."""

    @property
    def ratio(self) -> float:
        """Mean bytes per token."""
        ...

    def count(self, text: str) -> int:
        """Tokens of a text."""
        ...


class PseudoText:
    """Makes ASCII pseudo-word text whose length is a given number of simulator tokens.

    `text(key, n)` is a pure function of (seed, tokenizer ratio, key, n), and `text(key, n)` is
    a prefix of `text(key, m)` for n <= m, so equal keys give equal text and hence equal prefix
    blocks. The text is the longest prefix of the key's word stream that the simulator's
    tokenizer counts as at most `n` tokens, so a "2048-token" prompt is 2048 simulator tokens
    whatever the tokenizer's bytes per token.
    """

    def __init__(
        self, seed: int, vocabulary_size: int = 4096, tokenizer: Counter | None = None
    ) -> None:
        rng = random.Random(f"pseudo-vocabulary:{seed}")
        words = {_word(rng) for _ in range(vocabulary_size * 2)}
        self._words = tuple(sorted(words))[:vocabulary_size]
        self._seed = seed
        self.tokenizer: Counter = tokenizer or SimTokenizer()
        self._streams: dict[str, str] = {}
        self._cuts: dict[tuple[str, int], int] = {}

    def _stream(self, key: str, n_bytes: int) -> str:
        have = self._streams.get(key, "")
        if len(have) >= n_bytes:
            return have
        rng = random.Random(f"{self._seed}:{key}")
        pieces: list[str] = []
        size = -1
        while size < n_bytes:
            batch = rng.choices(self._words, k=_BATCH)
            pieces.extend(batch)
            size += sum(len(w) + 1 for w in batch)
        text = " ".join(pieces)
        self._streams[key] = text
        return text

    def text(self, key: str, n_tokens: int) -> str:
        """The longest prefix of `key`'s words that counts as at most `n_tokens` tokens."""
        if n_tokens <= 0:
            return ""
        cut = self._cuts.get((key, n_tokens))
        if cut is not None:
            return self._streams[key][:cut]
        need = int(n_tokens * self.tokenizer.ratio * _MARGIN) + 64
        stream = self._stream(key, need)
        while self.tokenizer.count(stream) <= n_tokens:  # a tokenizer denser than its mean
            need *= 2
            self._streams.pop(key, None)
            stream = self._stream(key, need)
        count = self.tokenizer.count
        lo, hi = _bracket(count, stream, n_tokens, int(n_tokens * self.tokenizer.ratio))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count(stream[:mid]) <= n_tokens:
                lo = mid
            else:
                hi = mid
        self._cuts[(key, n_tokens)] = lo
        return stream[:lo]

    def token_count(self, text: str) -> int:
        """Simulator tokens of a text at this generator's ratio."""
        return self.tokenizer.count(text)


def _bracket(count: Callable[[str], int], stream: str, n: int, guess: int) -> tuple[int, int]:
    """(lo, hi) around the cut: count(stream[:lo]) <= n < count(stream[:hi]), near `guess`."""
    guess = max(0, min(len(stream) - 1, guess))
    step = 8
    if count(stream[:guess]) <= n:
        lo = guess
        hi = min(len(stream), lo + step)
        while count(stream[:hi]) <= n:
            lo, step = hi, step * 2
            hi = min(len(stream), hi + step)
        return lo, hi
    hi = guess
    lo = max(0, hi - step)
    while lo > 0 and count(stream[:lo]) > n:
        hi, step = lo, step * 2
        lo = max(0, lo - step)
    return lo, hi


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))
