"""CPU time from /proc: per process tree, and who else kept the machine busy during a run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KTHREADD = 2  # parent of every kernel thread


@dataclass(frozen=True)
class Proc:
    """One process at one instant: name, parent, own CPU ticks and its reaped children's."""

    comm: str
    ppid: int
    ticks: int
    children_ticks: int


def _read(pid: int) -> Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ")".
    close = text.rindex(")")
    fields = text[close + 2 :].split()
    # fields[1] = ppid; fields[11..14] = utime, stime, cutime, cstime
    own = int(fields[11]) + int(fields[12])
    reaped = int(fields[13]) + int(fields[14])
    return Proc(text[text.index("(") + 1 : close], int(fields[1]), own, reaped)


def snapshot() -> dict[int, Proc]:
    """Every process on the machine right now."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read(int(entry))
            if proc is not None:
                out[int(entry)] = proc
    return out


def tree(root: int, procs: dict[int, Proc]) -> set[int]:
    """A process and all its descendants in a snapshot."""
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def ticks_per_second() -> int:
    """The kernel's clock ticks per second (SC_CLK_TCK)."""
    return os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and its live descendants (their reaped children included)."""
    procs = snapshot()
    members = [procs[pid] for pid in tree(root, procs) if pid in procs]
    return sum(p.ticks + p.children_ticks for p in members) / ticks_per_second()


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores; not idle, not iowait)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = stat.readline().split()
    # cpu user nice system idle iowait irq softirq steal
    busy = sum(int(value) for i, value in enumerate(fields[1:9]) if i not in (3, 4))
    return busy / ticks_per_second()


@dataclass(frozen=True)
class Sample:
    """The machine's busy time and every process's CPU ticks at one instant."""

    busy_s: float
    procs: dict[int, Proc]

    @classmethod
    def take(cls) -> Sample:
        """Read both now."""
        return cls(busy_seconds(), snapshot())


def split(before: Sample, after: Sample, ours: int) -> dict[str, Any]:
    """CPU seconds between two samples: busy, ours (the tree of `ours`), kernel threads, other."""
    # Ours includes what our reaped children used (wrk). For other processes only live ones can
    # be named (`other_live`); `other` is everything busy that is neither ours nor a kernel
    # thread, so it also holds processes that started and exited during the run (their time is
    # in a parent's cutime, or on init for orphans) and interrupts.
    hz = ticks_per_second()
    mine = tree(ours, after.procs) | tree(ours, before.procs)
    sums = {"ours": 0.0, "kernel": 0.0, "other_live": 0.0}
    others: list[tuple[float, int, str]] = []
    for pid, proc in after.procs.items():
        start = before.procs.get(pid)
        delta = (proc.ticks - (start.ticks if start is not None else 0)) / hz
        if pid in mine:
            reaped = proc.children_ticks - (start.children_ticks if start is not None else 0)
            sums["ours"] += delta + reaped / hz
        elif delta <= 0:
            continue
        elif pid == KTHREADD or proc.ppid == KTHREADD:
            sums["kernel"] += delta
        else:
            sums["other_live"] += delta
            others.append((delta, pid, proc.comm))
    busy = after.busy_s - before.busy_s
    others.sort(reverse=True)
    return {
        "busy": round(busy, 3),
        **{key: round(value, 3) for key, value in sums.items()},
        "other": round(max(busy - sums["ours"] - sums["kernel"], 0.0), 3),
        "top_other": [
            {"pid": pid, "comm": comm, "cmdline": _cmdline(pid), "cpu_s": round(s, 3)}
            for s, pid, comm in others[:3]
        ],
    }


def _cmdline(pid: int, limit: int = 120) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:limit]
