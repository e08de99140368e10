"""The workloads (a)-(e) and the long-prompt trace variant c_long at full and --quick sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.text import PseudoText
from bench.tokens import SimTokenizer
from bench.trace import TraceWindow, mooncake_workload, read_trace
from bench.workloads import (
    SessionShape,
    Workload,
    conversations,
    shared_prefix_groups,
    shared_system_users,
    zipf_groups,
)

WORKLOAD_NAMES = ("a", "b", "c", "c_long", "d", "e")
DEFAULT_WORKLOADS = ("a", "b", "c", "d", "e")


@dataclass(frozen=True, slots=True)
class Sizes:
    """Sizes of every workload for one invocation."""

    groups: int
    per_group: int
    conversations: SessionShape
    trace: TraceWindow
    users: SessionShape
    zipf_groups: int
    zipf_requests: int
    trace_long: TraceWindow


FULL = Sizes(
    groups=64,
    per_group=16,
    conversations=SessionShape(64, 8, (200, 600), (100, 300), (150, 350), 1.0, 16.0),
    trace=TraceWindow(last=500),
    users=SessionShape(128, 6, (100, 300), (100, 300), (100, 300), 1.0, 12.0),
    zipf_groups=16,
    zipf_requests=1024,
    trace_long=TraceWindow(last=300, max_blocks=160),
)
QUICK = Sizes(
    groups=32,
    per_group=8,
    conversations=SessionShape(32, 6, (200, 600), (100, 300), (150, 350), 1.0, 8.0),
    trace=TraceWindow(last=200),
    users=SessionShape(64, 4, (100, 300), (100, 300), (100, 300), 1.0, 6.0),
    zipf_groups=16,
    zipf_requests=384,
    trace_long=TraceWindow(last=120, max_blocks=160),
)


def build_workload(
    name: str,
    sizes: Sizes,
    seed: int,
    trace_path: Path,
    tokenizer: SimTokenizer | None = None,
) -> Workload:
    """Generate workload `name` (deterministic from `seed`, sized in `tokenizer`'s tokens);
    (c) and c_long read the trace file."""
    text = PseudoText(seed, tokenizer=tokenizer)
    if name == "a":
        return shared_prefix_groups(text, seed, groups=sizes.groups, per_group=sizes.per_group)
    if name == "b":
        return conversations(text, seed, sizes.conversations)
    if name == "c":
        return mooncake_workload(text, read_trace(trace_path), sizes.trace)
    if name == "c_long":
        return mooncake_workload(text, read_trace(trace_path), sizes.trace_long, "c_long")
    if name == "d":
        return shared_system_users(text, seed, sizes.users)
    if name == "e":
        return zipf_groups(text, seed, groups=sizes.zipf_groups, requests=sizes.zipf_requests)
    raise ValueError(f"unknown workload {name!r} (choose from {', '.join(WORKLOAD_NAMES)})")
