"""The one place the benchmark counts and hashes tokens: the simulator's own tokenizer."""

from __future__ import annotations

import dataclasses
import importlib
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


def _tokenizer_class() -> Any:
    """The simulator's configurable tokenizer class, None before it had one."""
    if "tokenizer" not in inspect.signature(sim_tokens.Prompt.from_text).parameters:
        return None
    try:
        return importlib.import_module("gateway.sim.tokenizer").Tokenizer
    except (ImportError, AttributeError):
        return None


def sim_has_ratio() -> bool:
    """True when the simulator's tokenizer takes a bytes-per-token ratio."""
    return _tokenizer_class() is not None


@dataclass(frozen=True, slots=True)
class TokenizedPrompt:
    """A prompt as the simulator sees it: token count and chained full-block hashes."""

    n_tokens: int
    hashes: tuple[int, ...]


class SimTokenizer:
    """The simulator's tokenizer at one bytes-per-token ratio (None: the simulator's default)."""

    __slots__ = ("_impl", "bytes_per_token")

    def __init__(self, bytes_per_token: float | None = None) -> None:
        self.bytes_per_token = bytes_per_token
        cls = _tokenizer_class()
        if cls is not None:
            self._impl: Any = cls(self.ratio)
        elif bytes_per_token not in (None, LEGACY_BYTES_PER_TOKEN):
            raise ValueError(
                f"bytes per token {bytes_per_token:g}: this simulator's tokenizer is fixed at "
                f"{LEGACY_BYTES_PER_TOKEN:g}"
            )
        else:
            self._impl = None

    @property
    def ratio(self) -> float:
        """The configured mean bytes per token."""
        if self.bytes_per_token is None:
            return sim_default_bytes_per_token()
        return self.bytes_per_token

    def _prompt(self, text: str) -> Any:
        if self._impl is None:
            return sim_tokens.Prompt.from_text(text)
        return sim_tokens.Prompt.from_text(text, self._impl)  # type: ignore[call-arg]

    def count(self, text: str) -> int:
        """Tokens of a text (on its own, from position 0)."""
        if not text:
            return 0
        if self._impl is None:
            return int(sim_tokens.count_tokens(text))
        return int(self._impl.count(text.encode()))

    def chat(self, messages: Sequence[Mapping[str, Any]], block_size: int) -> TokenizedPrompt:
        """Render chat messages exactly as the simulator does, count and hash their blocks."""
        prompt = self._prompt(sim_tokens.render_chat(messages))
        hashes = sim_tokens.block_hashes_packed(prompt.packed, block_size)
        return TokenizedPrompt(int(prompt.n_tokens), tuple(hashes))
