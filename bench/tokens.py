"""The one place the benchmark counts and hashes tokens: the simulator's own tokenizer."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.sim import tokens as sim_tokens
from gateway.sim.config import SimBackendConfig

LEGACY_BYTES_PER_TOKEN = 4.0


def sim_default_bytes_per_token() -> float:
    """The simulator's default tokenizer ratio (4.0 before it had a configurable one)."""
    names = {f.name for f in dataclasses.fields(SimBackendConfig)}
    if "bytes_per_token" in names:
        return float(SimBackendConfig().bytes_per_token)  # type: ignore[attr-defined]
    return LEGACY_BYTES_PER_TOKEN


def sim_has_ratio() -> bool:
    """True when the simulator's tokenizer takes a bytes-per-token ratio."""
    return "bytes_per_token" in inspect.signature(sim_tokens.Prompt.from_text).parameters


@dataclass(frozen=True, slots=True)
class TokenizedPrompt:
    """A prompt as the simulator sees it: token count and chained full-block hashes."""

    n_tokens: int
    hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SimTokenizer:
    """The simulator's tokenizer at one bytes-per-token ratio (None: the simulator's default)."""

    bytes_per_token: float | None = None

    @property
    def ratio(self) -> float:
        """The effective mean bytes per token."""
        if self.bytes_per_token is None:
            return sim_default_bytes_per_token()
        return self.bytes_per_token

    def _prompt(self, text: str) -> Any:
        if sim_has_ratio():
            return sim_tokens.Prompt.from_text(text, bytes_per_token=self.ratio)  # type: ignore[call-arg]
        if self.bytes_per_token not in (None, LEGACY_BYTES_PER_TOKEN):
            raise ValueError(
                f"bytes per token {self.bytes_per_token:g}: this simulator's tokenizer is "
                f"fixed at {LEGACY_BYTES_PER_TOKEN:g}"
            )
        return sim_tokens.Prompt.from_text(text)

    def count(self, text: str) -> int:
        """Tokens of a text."""
        if not text:
            return 0
        return int(self._prompt(text).n_tokens)

    def chat(self, messages: Sequence[Mapping[str, Any]], block_size: int) -> TokenizedPrompt:
        """Render chat messages exactly as the simulator does, count and hash their blocks."""
        prompt = self._prompt(sim_tokens.render_chat(messages))
        hashes = sim_tokens.block_hashes_packed(prompt.packed, block_size)
        return TokenizedPrompt(int(prompt.n_tokens), tuple(hashes))
