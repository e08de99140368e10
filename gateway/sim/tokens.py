"""Prompts as token ids, chat rendering and prefix block hashing of the simulator.

Text is tokenized by `tokenizer.Tokenizer` (content-defined boundaries, a configurable mean of
bytes per token, 4.4 by default); a text that extends another gives an extension of its tokens
except possibly the last one, so equal prefixes share their full KV blocks. Token ids are
packed as little-endian uint32.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import xxhash

from gateway.sim.tokenizer import DEFAULT_BYTES_PER_TOKEN, Tokenizer

# The fixed ratio of the old simulator and the gateway's default estimate; the simulator's own
# tokenizer averages DEFAULT_BYTES_PER_TOKEN (or the configured bytes_per_token) instead.
BYTES_PER_TOKEN = 4
DEFAULT_TOKENIZER = Tokenizer(DEFAULT_BYTES_PER_TOKEN)
MAX_TOKEN_ID = 2**32 - 1
_ROOT_SEED = 0x5EED_CAFE
_GENERATION_PROMPT = "<|assistant|>\n"

# Output vocabulary: one word per generated token.
VOCABULARY: tuple[str, ...] = (
    "the", "model", "cache", "prefix", "token", "block", "latency", "router", "fleet", "request",
    "stream", "answer", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and",
    "a", "of", "to", "in", "is", "it", "that", "for", "on", "with",
    "as", "was", "at", "by", "this", "from", "or", "an", "be", "are",
    "data", "server", "engine", "batch", "queue", "decode", "prefill", "memory", "graph", "kernel",
    "simple", "fast", "warm", "cold", "hit", "miss", "load", "score", "pick", "send",
    "read", "write", "yes", "no",
)  # fmt: skip
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Prompt:
    """A tokenized prompt: packed little-endian uint32 token ids plus a content digest."""

    packed: bytes
    n_tokens: int
    digest: int

    @classmethod
    def from_text(cls, text: str, tokenizer: Tokenizer = DEFAULT_TOKENIZER) -> Prompt:
        """Tokenize rendered prompt text."""
        data = text.encode()
        ids = tokenizer.encode(data)
        if sys.byteorder != "little":
            ids.byteswap()
        return cls(ids.tobytes(), len(ids), xxhash.xxh3_64_intdigest(data))

    @classmethod
    def from_token_ids(cls, token_ids: Sequence[int]) -> Prompt:
        """Wrap token ids given directly by the client; each must fit in uint32."""
        packed = pack_token_ids(token_ids)
        return cls(packed, len(token_ids), xxhash.xxh3_64_intdigest(packed))

    @property
    def token_ids(self) -> list[int]:
        """The token ids as a list."""
        return unpack_token_ids(self.packed)


def pack_token_ids(token_ids: Sequence[int]) -> bytes:
    """Pack token ids as little-endian uint32; raises OverflowError outside [0, 2**32)."""
    arr = array("I", token_ids)
    if sys.byteorder != "little":
        arr.byteswap()
    return arr.tobytes()


def unpack_token_ids(packed: bytes) -> list[int]:
    """Inverse of pack_token_ids."""
    arr = array("I")
    arr.frombytes(packed)
    if sys.byteorder != "little":
        arr.byteswap()
    return arr.tolist()


def count_tokens(text: str, tokenizer: Tokenizer = DEFAULT_TOKENIZER) -> int:
    """Number of tokens of a text."""
    return tokenizer.count(text.encode())


def tokenize(text: str, tokenizer: Tokenizer = DEFAULT_TOKENIZER) -> list[int]:
    """Token ids of a text."""
    return Prompt.from_text(text, tokenizer).token_ids


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """Chained, position-aware 64-bit hashes of the FULL blocks of a token sequence."""
    return block_hashes_packed(pack_token_ids(token_ids), block_size)


def block_hashes_packed(packed: bytes, block_size: int) -> list[int]:
    """block_hashes() over packed token ids (4 bytes per id)."""
    step = block_size * 4
    n_full = len(packed) // step
    view = memoryview(packed)
    out: list[int] = []
    parent = _ROOT_SEED
    digest = xxhash.xxh3_64_intdigest
    for i in range(n_full):
        parent = digest(view[i * step : (i + 1) * step], seed=parent)
        out.append(parent)
    return out


def render_chat(messages: Sequence[Mapping[str, Any]], tools: Any = None) -> str:
    """Render chat messages like a chat template: tools JSON, then role markers and content."""
    parts: list[str] = []
    if tools:
        parts.append("<|tools|>\n")
        parts.append(orjson.dumps(tools, option=orjson.OPT_SORT_KEYS).decode())
        parts.append("<|end|>\n")
    for message in messages:
        parts.append(f"<|{message['role']}|>\n")
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif content is not None:
            parts.extend(_content_parts(content))
        tool_calls = message.get("tool_calls")
        if tool_calls:
            parts.append(orjson.dumps(tool_calls, option=orjson.OPT_SORT_KEYS).decode())
        parts.append("<|end|>\n")
    parts.append(_GENERATION_PROMPT)
    return "".join(parts)


def _content_parts(content: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    for part in content:
        if part.get("type") == "text":
            yield part["text"]
        else:
            yield f"<|{part.get('type')}|>"


def output_word_index(digest: int, position: int) -> int:
    """Index into VOCABULARY of the generated word at a position (a pure function)."""
    x = ((digest ^ (position * 0x9E3779B97F4A7C15)) * 0xBF58476D1CE4E5B9) & _MASK64
    return (x >> 40) % len(VOCABULARY)


def output_text(digest: int, n_tokens: int) -> str:
    """The full deterministic completion text of n_tokens words."""
    words = [VOCABULARY[output_word_index(digest, i)] for i in range(n_tokens)]
    return " ".join(words)


def output_pieces(digest: int, n_tokens: int) -> list[str]:
    """The completion split into one piece per token (concatenation == output_text)."""
    return [
        ("" if i == 0 else " ") + VOCABULARY[output_word_index(digest, i)] for i in range(n_tokens)
    ]
