"""Unit tests of the benchmark's workload generators and pseudo-text."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.text import PseudoText
from bench.trace import (
    TRACE_BLOCK_TOKENS,
    TraceWindow,
    block_text,
    mooncake_workload,
    read_trace,
    record_text,
)
from bench.workloads import (
    SessionShape,
    check_ordered,
    conversations,
    shared_prefix_groups,
    shared_system_users,
    zipf_groups,
    zipf_weights,
)


@pytest.fixture(scope="module")
def text() -> PseudoText:
    return PseudoText(7)


def token_count(s: str) -> int:
    return PseudoText(7).token_count(s)


def test_pseudo_text_has_exact_token_length_and_is_ascii(text: PseudoText) -> None:
    for n in (1, 5, 128, 2048):
        s = text.text("k", n)
        assert s.isascii()
        assert token_count(s) == n
        longer = text.text("k", n + 1)
        assert token_count(longer[: len(s) + 1]) > n  # the longest such prefix


def test_pseudo_text_is_deterministic_prefix_stable_and_keyed(text: PseudoText) -> None:
    assert text.text("a", 300) == PseudoText(7).text("a", 300)
    assert text.text("a", 512).startswith(text.text("a", 100))
    assert text.text("a", 64) != text.text("b", 64)
    assert PseudoText(8).text("a", 64) != text.text("a", 64)
    assert text.text("a", 0) == ""


def test_shared_prefix_groups_structure(text: PseudoText) -> None:
    w = shared_prefix_groups(text, 1, groups=6, per_group=4, system_tokens=64, question_tokens=8)
    assert len(w.requests) == 24
    check_ordered(w.requests)
    systems: dict[int, set[str]] = {}
    for r in w.requests:
        system, question = r.messages
        assert token_count(system["content"]) == 64
        assert token_count(question["content"]) == 8
        systems.setdefault(r.group, set()).add(system["content"])
    assert sorted(Counter(r.group for r in w.requests).values()) == [4] * 6
    assert all(len(v) == 1 for v in systems.values())
    assert len({next(iter(v)) for v in systems.values()}) == 6
    questions = {r.messages[1]["content"] for r in w.requests}
    assert len(questions) == 24
    order = [r.group for r in w.requests]
    assert order != sorted(order)  # arrival order is shuffled


def test_shared_prefix_groups_is_deterministic(text: PseudoText) -> None:
    a = shared_prefix_groups(text, 3, groups=4, per_group=2, system_tokens=16, question_tokens=4)
    b = shared_prefix_groups(text, 3, groups=4, per_group=2, system_tokens=16, question_tokens=4)
    c = shared_prefix_groups(text, 4, groups=4, per_group=2, system_tokens=16, question_tokens=4)
    assert a == b
    assert a.requests != c.requests


def test_zipf_weights() -> None:
    w = zipf_weights(16, 1.1)
    assert sum(w) == pytest.approx(1.0)
    assert all(x > y for x, y in itertools.pairwise(w))
    assert w[0] / w[1] == pytest.approx(2**1.1)


def test_zipf_groups_skew(text: PseudoText) -> None:
    w = zipf_groups(
        text, 2, groups=16, requests=4000, exponent=1.1, system_tokens=8, question_tokens=4
    )
    counts = Counter(r.group for r in w.requests)
    expected = zipf_weights(16, 1.1)
    assert counts[0] / 4000 == pytest.approx(expected[0], abs=0.03)
    assert counts[0] > 1.8 * counts[1] > 0
    assert counts.most_common(1)[0][0] == 0
    same = {r.messages[0]["content"] for r in w.requests if r.group == 0}
    assert len(same) == 1


def test_conversations_resend_the_whole_history(text: PseudoText) -> None:
    shape = SessionShape(5, 4, (10, 20), (5, 10), (5, 10), think_mean=1.0, start_window=2.0)
    w = conversations(text, 0, shape)
    assert len(w.requests) == 20
    check_ordered(w.requests)
    by_session: dict[int, list[tuple[int, tuple[dict[str, str], ...]]]] = {}
    for r in w.requests:
        by_session.setdefault(r.session, []).append((r.turn, r.messages))
    for turns in by_session.values():
        turns.sort()
        for (_, prev), (_, cur) in itertools.pairwise(turns):
            assert cur[: len(prev)] == prev
            assert [m["role"] for m in cur[len(prev) :]] == ["assistant", "user"]


def test_retimed_waits_for_the_answer_and_scales_think_time(text: PseudoText) -> None:
    shape = SessionShape(3, 3, (4, 4), (4, 4), (4, 4), think_mean=1.0, start_window=1.0)
    w = conversations(text, 0, shape)
    t = w.retimed(2.0, 0.5)
    by_rid = {r.rid: r for r in w.requests}
    ends: dict[int, float] = {}
    for r in sorted(t.requests, key=lambda q: (q.session, q.turn)):
        base = by_rid[r.rid]
        if r.turn == 0:
            assert r.at == pytest.approx(base.at * 2.0)
        else:
            assert r.think == pytest.approx(base.think * 2.0)
            assert r.at == pytest.approx(ends[r.session] + r.think)
        ends[r.session] = r.at + 0.5
    check_ordered(t.requests)


def test_shared_system_users_all_start_with_one_system_prompt(text: PseudoText) -> None:
    shape = SessionShape(6, 3, (5, 9), (5, 9), (5, 9), start_window=1.0)
    w = shared_system_users(text, 0, shape, system_tokens=32)
    systems = {r.messages[0]["content"] for r in w.requests}
    assert len(systems) == 1
    assert all(r.messages[0]["role"] == "system" for r in w.requests)
    assert len({r.session for r in w.requests}) == 6


def _write_trace(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    return path


def test_trace_equal_hash_ids_give_equal_text_blocks(text: PseudoText, tmp_path: Path) -> None:
    records = [
        {"timestamp": 0, "input_length": 1200, "output_length": 500, "hash_ids": [1, 2, 3]},
        {"timestamp": 1500, "input_length": 1100, "output_length": 3, "hash_ids": [1, 2, 9]},
        {"timestamp": 2000, "input_length": 600, "output_length": 10, "hash_ids": [5, 6]},
    ]
    trace = read_trace(_write_trace(tmp_path / "t.jsonl", records))
    a, _ = record_text(text, trace[0], 60)
    b, _ = record_text(text, trace[1], 60)
    c, _ = record_text(text, trace[2], 60)
    block = len(block_text(text, 1))
    # each block is sized on its own; where it sits moves its token boundaries a little
    assert token_count(a) == pytest.approx(1200, rel=0.05)
    assert token_count(b) == pytest.approx(1100, rel=0.05)
    assert a[: 2 * block] == b[: 2 * block]  # ids 1, 2 shared
    assert a[2 * block : 2 * block + 64] != b[2 * block : 2 * block + 64]  # 3 vs 9
    assert a[:block] == block_text(text, 1)
    assert c[:64] != a[:64]
    assert b[2 * block :] == block_text(text, 9, 1100 - 2 * TRACE_BLOCK_TOKENS)


def test_mooncake_workload_window_cap_and_timing(text: PseudoText, tmp_path: Path) -> None:
    records = [
        {"timestamp": 1000 * i, "input_length": 1500, "output_length": 100 * i, "hash_ids": [
            10 * i, 10 * i + 1, 10 * i + 2]}
        for i in range(5)
    ]  # fmt: skip
    trace = read_trace(_write_trace(tmp_path / "t.jsonl", records))
    w = mooncake_workload(text, trace, TraceWindow(last=3, max_blocks=2, max_tokens_cap=64))
    assert len(w.requests) == 3
    assert [r.at for r in w.requests] == [0.0, 1.0, 2.0]
    assert [r.max_tokens for r in w.requests] == [64, 64, 64]
    sizes = [token_count(r.messages[0]["content"]) for r in w.requests]
    assert sizes == pytest.approx([2 * TRACE_BLOCK_TOKENS] * 3, rel=0.05)
    assert "records 2-4" in w.description
    assert "3 truncated" in w.description
    small = mooncake_workload(text, trace[:1], TraceWindow(last=1, max_tokens_cap=64))
    assert small.requests[0].max_tokens == 1  # output_length 0 -> at least one token
