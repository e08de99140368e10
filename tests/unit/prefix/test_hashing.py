"""Properties of prompt rendering and chained block hashing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.prefix.hashing import PrefixKey, chain_hashes, chain_root, prefix_hashes
from gateway.prefix.render import render_prompt

BLOCK = 16
U64 = (1 << 64) - 1

texts = st.text(min_size=0, max_size=80)
roles = st.sampled_from(["system", "user", "assistant", "tool"])
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": texts}), max_size=6)


def chat(msgs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": msgs, **extra}


def render(body: dict[str, Any]) -> bytes:
    return render_prompt(body, "chat")[0]


@given(st.binary(max_size=600), st.binary(max_size=200), st.integers(0, U64))
def test_equal_prefixes_give_equal_leading_hashes(common: bytes, tail: bytes, root: int) -> None:
    a = chain_hashes(common, root, BLOCK, 1000)
    b = chain_hashes(common + tail, root, BLOCK, 1000)
    assert b[: len(a)] == a
    assert len(a) == len(common) // BLOCK


@given(st.binary(min_size=BLOCK, max_size=400), st.data())
def test_change_at_byte_i_changes_its_block_and_all_later_ones(data: bytes, draw: Any) -> None:
    i = draw.draw(st.integers(0, len(data) - 1))
    flipped = data[:i] + bytes([data[i] ^ draw.draw(st.integers(1, 255))]) + data[i + 1 :]
    a = chain_hashes(data, 7, BLOCK, 1000)
    b = chain_hashes(flipped, 7, BLOCK, 1000)
    changed_block = i // BLOCK
    assert a[:changed_block] == b[:changed_block]
    assert all(x != y for x, y in zip(a[changed_block:], b[changed_block:], strict=True))


@given(messages, st.text(max_size=10), st.text(max_size=10), st.text(max_size=10))
def test_models_and_salts_never_share_hashes(
    msgs: list[dict[str, Any]], model: str, other: str, salt: str
) -> None:
    body = chat([*msgs, {"role": "user", "content": "x" * 64}])
    base = prefix_hashes(body, "chat", model, None, BLOCK, 64).hashes
    assert base
    variants = [
        prefix_hashes(body, "chat", model, salt, BLOCK, 64).hashes,
        prefix_hashes(body, "chat", model + "\x00" + other, None, BLOCK, 64).hashes,
    ]
    if other != model:
        variants.append(prefix_hashes(body, "chat", other, None, BLOCK, 64).hashes)
    for hashes in variants:
        assert not set(hashes) & set(base)


def test_salt_and_model_boundaries_are_unambiguous() -> None:
    assert chain_root("ab", "c", 256) != chain_root("a", "bc", 256)
    assert chain_root("a", "", 256) != chain_root("a", None, 256)
    assert chain_root("a", None, 256) != chain_root("a", None, 128)


@given(messages, messages)
def test_appending_messages_extends_the_rendering(
    first: list[dict[str, Any]], more: list[dict[str, Any]]
) -> None:
    assert render(chat(first + more)).startswith(render(chat(first)))


@given(st.lists(texts, min_size=1, max_size=5), st.lists(texts, min_size=1, max_size=5))
def test_different_message_splits_render_differently(a: list[str], b: list[str]) -> None:
    body_a = chat([{"role": "user", "content": t} for t in a])
    body_b = chat([{"role": "user", "content": t} for t in b])
    if a != b:
        assert render(body_a) != render(body_b)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ([{"role": "user", "content": "ab"}], [{"role": "user", "content": "a"}, {"role": "b"}]),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            [{"role": "user", "content": "ab"}],
        ),
        ([{"role": "user", "content": "a\x00Mb"}], [{"role": "user", "content": "a"}]),
        ([{"role": "user", "name": "x", "content": "y"}], [{"role": "user", "content": "xy"}]),
        ([{"role": "us", "content": "er"}], [{"role": "user", "content": ""}]),
        ([{"role": "1", "content": "x"}], [{"role": 1, "content": "x"}]),
        ([{"role": "user", "name": "1"}], [{"role": "user", "name": 1}]),
        (
            [{"role": "user", "content": [{"type": "text", "text": "a"}, "b"]}],
            [{"role": "user", "content": "ab"}],
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u1"}}]}],
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u2"}}]}],
        ),
        (
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}],
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "2"}]}],
        ),
    ],
)
def test_rendering_is_injective_on_examples(
    left: list[dict[str, Any]], right: list[dict[str, Any]]
) -> None:
    assert render(chat(left)) != render(chat(right))


def test_tools_are_canonical_and_first() -> None:
    tools_a = [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": 2}}}]
    tools_b = [{"function": {"parameters": {"a": 2, "b": 1}, "name": "f"}, "type": "function"}]
    msgs = [{"role": "user", "content": "hi"}]
    assert render(chat(msgs, tools=tools_a)) == render(chat(msgs, tools=tools_b))
    assert render(chat(msgs, tools=tools_a)) != render(chat(msgs))


def test_string_content_equals_single_text_part() -> None:
    as_str = chat([{"role": "user", "content": "hello"}])
    as_part = chat([{"role": "user", "content": [{"type": "text", "text": "hello"}]}])
    assert render(as_str) == render(as_part)


@pytest.mark.parametrize(
    "prompt",
    [
        "plain text " * 40,
        ["one " * 30, "two " * 30],
        list(range(200)),
        [list(range(100)), list(range(50))],
        [1, "mixed", None],
        [],
        None,
        [[1, 2], "x"],
        [2**40, 3],
        {"odd": "shape"},
    ],
)
def test_completion_prompts_render_without_error(prompt: Any) -> None:
    key = prefix_hashes({"prompt": prompt}, "completion", "m", None, BLOCK, 64)
    assert isinstance(key, PrefixKey)
    assert all(0 <= h <= U64 for h in key.hashes)


def test_completion_forms_are_distinct() -> None:
    assert render_prompt({"prompt": "ab"}, "completion") == render_prompt(
        {"prompt": ["ab"]}, "completion"
    )  # a batch of one prompt is that prompt
    bodies: list[dict[str, Any]] = [
        {"prompt": "ab"},
        {"prompt": ["a", "b"]},
        {"prompt": [97, 98]},
        {"prompt": [[97, 98]]},
        {"prompt": [[97], [98]]},
    ]
    rendered = {render_prompt(b, "completion")[0] for b in bodies}
    assert len(rendered) == len(bodies)
    assert render_prompt({"prompt": "ab"}, "completion") != render_prompt(
        {"messages": [{"role": "user", "content": "ab"}]}, "chat"
    )


def test_token_prompts_extend_like_strings() -> None:
    short = prefix_hashes({"prompt": list(range(100))}, "completion", "m", None, BLOCK, 64)
    longer = prefix_hashes({"prompt": list(range(300))}, "completion", "m", None, BLOCK, 64)
    assert longer.hashes[: len(short.hashes)] == short.hashes


def test_token_prompt_limit_keeps_the_total_length() -> None:
    key = prefix_hashes({"prompt": list(range(10_000))}, "completion", "m", None, BLOCK, 8)
    assert len(key.hashes) == 8
    assert key.rendered_bytes == 4 + 4 * 10_000  # two markers + u32 ids


def test_only_full_blocks_and_the_cap() -> None:
    body = chat([{"role": "user", "content": "x" * 100}])
    data = render(body)
    key = prefix_hashes(body, "chat", "m", None, BLOCK, 1000)
    assert key.rendered_bytes == len(data)
    assert len(key.hashes) == len(data) // BLOCK
    assert len(prefix_hashes(body, "chat", "m", None, BLOCK, 3).hashes) == 3
    assert prefix_hashes(chat([]), "chat", "m", None, BLOCK, 10).hashes == []


@settings(max_examples=50)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=10,
    )
)
def test_odd_but_valid_json_never_raises(value: Any) -> None:
    for body in ({"messages": value, "tools": value}, {"messages": [value, {"content": value}]}):
        prefix_hashes(body, "chat", "m", None, BLOCK, 8)
    prefix_hashes({"prompt": value}, "completion", "m", None, BLOCK, 8)


def test_hashes_are_deterministic_u64() -> None:
    body = chat([{"role": "system", "content": "s" * 500}, {"role": "user", "content": "é" * 99}])
    a = prefix_hashes(body, "chat", "m", "tenant")
    b = prefix_hashes(dict(body), "chat", "m", "tenant")
    assert a == b
    assert all(0 <= h <= U64 for h in a.hashes)
