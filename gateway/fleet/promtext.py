"""A small reader for the Prometheus text format: sums of samples by metric name."""

from __future__ import annotations

from collections.abc import Collection


def sum_samples(text: str, names: Collection[str]) -> dict[str, float]:
    """For each wanted metric name present, the sum of its samples over all label sets."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        space = line.find(" ")
        if space < 0:
            continue
        end = brace if 0 <= brace < space else space
        name = line[:end]
        if name not in names:
            continue
        value_part = line[line.rfind("}") + 1 :] if brace >= 0 else line[space:]
        fields = value_part.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        totals[name] = totals.get(name, 0.0) + value
    return totals
