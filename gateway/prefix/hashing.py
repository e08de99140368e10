"""Prompt prefix hashing: canonical bytes → fixed-size blocks → chained xxh3-64 hashes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import xxhash

from gateway.prefix.render import PromptKind, canonical_json, render_prompt

DEFAULT_BLOCK_BYTES = 256
DEFAULT_MAX_BLOCKS = 512
_ROOT_DOMAIN = b"prefix-gateway/chain/v1"
_U64_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class PrefixKey:
    """The chained block hashes of a request's prompt and its total rendered length."""

    hashes: list[int]
    rendered_bytes: int


def _length_prefixed(value: bytes) -> bytes:
    return len(value).to_bytes(4, "little") + value


def chain_root(model: str, salt: str | None, block_bytes: int) -> int:
    """The seed of a chain: isolates models, salts (tenant or cache_salt) and block sizes."""
    material = [_ROOT_DOMAIN, _length_prefixed(model.encode("utf-8", "surrogatepass"))]
    if salt is None:
        material.append(b"\x00")
    else:
        material.append(b"\x01")
        material.append(_length_prefixed(salt.encode("utf-8", "surrogatepass")))
    material.append(block_bytes.to_bytes(8, "little"))
    return int(xxhash.xxh3_64_intdigest(b"".join(material)))


def chain_hashes(data: bytes, root: int, block_bytes: int, max_blocks: int) -> list[int]:
    """h_i = xxh3_64(block_i, seed=h_{i-1}), h_-1 = root; full blocks only, at most max_blocks."""
    count = min(len(data) // block_bytes, max_blocks) if block_bytes > 0 else 0
    digest = xxhash.xxh3_64_intdigest
    hashes: list[int] = []
    append = hashes.append
    h = root & _U64_MASK
    end = count * block_bytes
    for offset in range(0, end, block_bytes):
        h = digest(data[offset : offset + block_bytes], h)
        append(h)
    return hashes


def prefix_hashes(
    body: Mapping[str, Any],
    kind: PromptKind,
    model: str,
    salt: str | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
) -> PrefixKey:
    """Hash a request's prompt prefix into a chain of block hashes (never raises on JSON)."""
    limit = block_bytes * max_blocks
    try:
        data, total = render_prompt(body, kind, limit)
    except Exception:  # robustness: odd input must never fail a request
        data = b"\x00J" + canonical_json(body)
        total = len(data)
    root = chain_root(model, salt, block_bytes)
    return PrefixKey(chain_hashes(data, root, block_bytes, max_blocks), total)
