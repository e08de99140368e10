"""Workload (c): a window of the Mooncake trace, each hash id rendered as the same text block."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.text import PseudoText
from bench.workloads import BenchRequest, Workload

TRACE_BLOCK_TOKENS = 512


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One Mooncake trace line: arrival (ms), prompt and answer lengths, prefix block ids."""

    timestamp_ms: int
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TraceWindow:
    """Which records to replay and how to bound them."""

    last: int = 500
    max_blocks: int = 60
    max_tokens_cap: int = 64


def read_trace(path: Path) -> list[TraceRecord]:
    """Parse a Mooncake JSONL trace."""
    records: list[TraceRecord] = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            d = orjson.loads(line)
            records.append(
                TraceRecord(
                    int(d["timestamp"]),
                    int(d["input_length"]),
                    int(d["output_length"]),
                    tuple(int(h) for h in d["hash_ids"]),
                )
            )
    return records


def record_text(text: PseudoText, record: TraceRecord, max_blocks: int) -> tuple[str, bool]:
    """The prompt of a record (block i = text of hash id i) and whether it was truncated."""
    ids = record.hash_ids[:max_blocks]
    truncated = len(record.hash_ids) > max_blocks
    n_tokens = min(record.input_length, len(ids) * TRACE_BLOCK_TOKENS)
    parts: list[str] = []
    left = n_tokens
    for hid in ids:
        take = min(left, TRACE_BLOCK_TOKENS)
        if take <= 0:
            break
        parts.append(block_text(text, hid, take))
        left -= take
    return "".join(parts), truncated


def block_text(text: PseudoText, hash_id: int, n_tokens: int = TRACE_BLOCK_TOKENS) -> str:
    """The first `n_tokens` of the text every occurrence of `hash_id` stands for."""
    return text.text(f"trace:{hash_id}", n_tokens)


def mooncake_workload(
    text: PseudoText, records: list[TraceRecord], window: TraceWindow, name: str = "c"
) -> Workload:
    """(c) the last `window.last` records, prompts capped at `max_blocks` trace blocks.

    `name` "c_long" is the long-prompt variant: a window whose cap is far above (c)'s.
    """
    chosen = records[-window.last :] if window.last > 0 else records
    if not chosen:
        raise ValueError("the trace window is empty")
    t0 = chosen[0].timestamp_ms
    first = len(records) - len(chosen)
    out: list[BenchRequest] = []
    truncated = 0
    for i, rec in enumerate(chosen):
        prompt, cut = record_text(text, rec, window.max_blocks)
        truncated += cut
        max_tokens = max(1, min(rec.output_length, window.max_tokens_cap))
        at = (rec.timestamp_ms - t0) / 1000.0
        out.append(BenchRequest(i, at, ({"role": "user", "content": prompt},), max_tokens))
    span_s = (chosen[-1].timestamp_ms - t0) / 1000.0
    desc = (
        f"Mooncake synthetic trace records {first}-{first + len(chosen) - 1} (the last "
        f"{len(chosen)}, {span_s:.0f} s of trace time, re-timed to the target load): each "
        f"hash id = the same {TRACE_BLOCK_TOKENS} pseudo-tokens, prompts capped at "
        f"{window.max_blocks} blocks ({truncated} truncated), max_tokens = "
        f"min(output_length, {window.max_tokens_cap})"
    )
    title = "Mooncake trace" if name == "c" else "Mooncake trace, long prompts"
    return Workload(name, title, tuple(out), desc)
