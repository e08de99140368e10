"""Pseudo-tokenizer, chat rendering and block hashing of the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sim.tokens import (
    Prompt,
    block_hashes,
    block_hashes_packed,
    count_tokens,
    output_pieces,
    output_text,
    render_chat,
    tokenize,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("abcd", 1), ("abcde", 2), ("é", 1), ("éé", 1), ("ééé", 2)],
)
def test_count_tokens_is_four_utf8_bytes_per_token(text: str, expected: int) -> None:
    assert count_tokens(text) == expected
    assert Prompt.from_text(text).n_tokens == expected
    assert len(tokenize(text)) == expected


def test_tokenize_is_deterministic() -> None:
    a = Prompt.from_text("The quick brown fox")
    b = Prompt.from_text("The quick brown fox")
    assert a == b
    assert a.token_ids == b.token_ids
    assert a.digest != Prompt.from_text("The quick brown fog").digest


@given(st.text(), st.text())
def test_equal_text_prefix_gives_equal_token_prefix(a: str, b: str) -> None:
    full = len(a.encode()) // 4
    assert tokenize(a + b)[:full] == tokenize(a)[:full]


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
    prompt = Prompt.from_text("x" * 300)
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
