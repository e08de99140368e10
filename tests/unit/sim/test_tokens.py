"""Pseudo-BPE tokenizer (ratio, prefix stability), chat rendering and block hashing."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sim.tokenizer import DEFAULT_BYTES_PER_TOKEN, Tokenizer
from gateway.sim.tokens import (
    DEFAULT_TOKENIZER,
    Prompt,
    block_hashes,
    block_hashes_packed,
    count_tokens,
    output_pieces,
    output_text,
    render_chat,
    tokenize,
)

_WORDS = ("the", "model", "cache", "prefix", "latency", "router", "a", "of", "request", "ok")


def make_text(rng: random.Random, n_bytes: int) -> str:
    """Prose-like ASCII text of about n_bytes."""
    words = rng.choices(_WORDS, k=n_bytes // 4 + 1)
    return " ".join(words)[:n_bytes]


def hashes_of(prompt: Prompt, block_size: int) -> list[int]:
    return block_hashes_packed(prompt.packed, block_size)


def test_empty_text_has_no_tokens() -> None:
    assert count_tokens("") == 0
    assert Prompt.from_text("").n_tokens == 0
    assert tokenize("") == []


def test_default_ratio_is_not_four_bytes_per_token() -> None:
    text = make_text(random.Random(1), 64 * 1024)
    ratio = len(text.encode()) / count_tokens(text)
    assert DEFAULT_BYTES_PER_TOKEN == 4.4
    assert ratio == pytest.approx(4.4, rel=0.03)


@pytest.mark.parametrize("bpt", [1.0, 2.5, 4.0, 4.4, 6.0])
def test_mean_ratio_is_the_configured_one(bpt: float) -> None:
    tokenizer = Tokenizer(bpt)
    rng = random.Random(int(bpt * 10))
    texts = [make_text(rng, rng.randint(200, 4000)) for _ in range(40)]
    total_bytes = sum(len(t.encode()) for t in texts)
    total_tokens = sum(tokenizer.count(t.encode()) for t in texts)
    assert total_bytes / total_tokens == pytest.approx(bpt, rel=0.03)


def test_different_texts_get_somewhat_different_ratios() -> None:
    rng = random.Random(7)
    ratios = set()
    for _ in range(20):
        data = make_text(rng, 400).encode()
        ratios.add(round(len(data) / DEFAULT_TOKENIZER.count(data), 3))
    assert len(ratios) > 10
    assert all(2.5 < r < 8 for r in ratios)


def test_repetitive_and_non_ascii_text_also_average_the_ratio() -> None:
    for text in ("x" * 40_000, "é" * 20_000, "日本語のテキスト" * 2000):
        data = text.encode()
        assert len(data) / DEFAULT_TOKENIZER.count(data) == pytest.approx(4.4, rel=0.06)


def test_tokenize_is_deterministic_and_pieces_cover_the_text() -> None:
    a = Prompt.from_text("The quick brown fox")
    b = Prompt.from_text("The quick brown fox")
    assert a == b
    assert a.token_ids == b.token_ids
    assert a.digest != Prompt.from_text("The quick brown fog").digest
    data = b"The quick brown fox jumps over the lazy dog"
    assert b"".join(DEFAULT_TOKENIZER.split(data)) == data
    assert Tokenizer(4.4).encode(data) == DEFAULT_TOKENIZER.encode(data)
    assert Tokenizer(4.4, seed=1).encode(data) != DEFAULT_TOKENIZER.encode(data)


def test_equal_pieces_get_equal_ids() -> None:
    data = b"abc abc abc abc abc abc abc abc abc abc abc abc abc abc"
    pieces = DEFAULT_TOKENIZER.split(data)
    ids = DEFAULT_TOKENIZER.encode(data)
    by_piece: dict[bytes, int] = {}
    for piece, token_id in zip(pieces, ids, strict=True):
        assert by_piece.setdefault(piece, token_id) == token_id


@given(st.text(), st.text(), st.sampled_from([1.0, 3.0, 4.4, 7.5]))
def test_an_extended_text_extends_the_tokens_except_the_last(a: str, b: str, bpt: float) -> None:
    tokenizer = Tokenizer(bpt)
    short = tokenizer.split(a.encode())
    longer = tokenizer.split((a + b).encode())
    stable = max(0, len(short) - 1)
    assert longer[:stable] == short[:stable]
    assert b"".join(longer) == (a + b).encode()
    assert tokenize(a + b)[: max(0, len(tokenize(a)) - 1)] == tokenize(a)[:-1]


@given(st.text(min_size=1), st.text(min_size=1))
def test_a_common_text_prefix_shares_its_full_blocks(head: str, tail: str) -> None:
    head = head * 20  # long enough for a few blocks
    first = Prompt.from_text(head + tail)
    second = Prompt.from_text(head + "different tail")
    blocks_of_head = (Prompt.from_text(head).n_tokens - 1) // 4
    assert hashes_of(first, 4)[:blocks_of_head] == hashes_of(second, 4)[:blocks_of_head]


def test_utf8_only() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        DEFAULT_TOKENIZER.split(b"\xff")
    with pytest.raises(ValueError, match="bytes_per_token"):
        Tokenizer(0.5)


def test_token_ids_round_trip() -> None:
    ids = [0, 1, 2**32 - 1, 123456]
    prompt = Prompt.from_token_ids(ids)
    assert prompt.token_ids == ids
    assert prompt.n_tokens == 4
    with pytest.raises(OverflowError):
        Prompt.from_token_ids([2**32])


def test_only_full_blocks_are_hashed() -> None:
    assert block_hashes(list(range(15)), 16) == []
    assert len(block_hashes(list(range(16)), 16)) == 1
    assert len(block_hashes(list(range(47)), 16)) == 2


def test_block_hashes_are_chained_and_position_aware() -> None:
    block = list(range(16))
    two = block_hashes(block + block, 16)
    assert two[0] != two[1]  # same content, different position
    longer = block_hashes(block + block + list(range(100, 116)), 16)
    assert longer[:2] == two
    other_head = block_hashes([7, *block[1:], *block], 16)
    assert other_head[1] != two[1]  # a different parent changes every later hash


def test_block_hashes_match_packed_variant() -> None:
    prompt = Prompt.from_text("x" * 3000)
    assert prompt.n_tokens > 32
    assert block_hashes(prompt.token_ids, 16) == block_hashes_packed(prompt.packed, 16)


def test_render_chat_puts_tools_first_and_joins_text_parts() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    text = render_chat(messages, tools)
    assert text.startswith("<|tools|>\n")
    assert text.index('"name":"f"') < text.index("<|system|>") < text.index("<|user|>\nab")
    assert text.endswith("<|assistant|>\n")


def test_conversation_prefix_renders_as_text_prefix() -> None:
    turn1 = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    turn2 = [*turn1, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "?"}]
    first = render_chat(turn1).removesuffix("<|assistant|>\n")
    assert render_chat(turn2).startswith(first)


def test_output_is_a_function_of_prompt_and_position() -> None:
    digest = Prompt.from_text("hello").digest
    assert output_text(digest, 8) == output_text(digest, 8)
    assert output_text(digest, 8).startswith(output_text(digest, 3))
    assert "".join(output_pieces(digest, 8)) == output_text(digest, 8)
    assert len(output_text(digest, 8).split(" ")) == 8
