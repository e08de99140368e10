"""A small reader for the Prometheus text format: samples grouped by metric name."""

from __future__ import annotations

import re
from collections.abc import Collection

_NAME = re.compile(r"[^\s{]+")


def collect_samples(text: str, names: Collection[str]) -> dict[str, list[float]]:
    """For each wanted metric name present, the values of its samples over all label sets."""
    found: dict[str, list[float]] = {}
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line or line[0] == "#":
            continue
        match = _NAME.match(line)
        if match is None or match.group() not in names:
            continue
        rest = line[match.end() :]
        if rest.startswith("{"):
            close = rest.rfind("}")
            if close < 0:
                continue
            rest = rest[close + 1 :]
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        found.setdefault(match.group(), []).append(value)
    return found


def sum_samples(text: str, names: Collection[str]) -> dict[str, float]:
    """For each wanted metric name present, the sum of its samples over all label sets."""
    return {name: sum(values) for name, values in collect_samples(text, names).items()}


_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def collect_labels(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of every sample of one metric (an `_info` gauge carries its data there)."""
    found: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line.startswith(name) or line[len(name) : len(name) + 1] != "{":
            continue
        close = line.rfind("}")
        if close < 0:
            continue
        found.append(dict(_LABEL.findall(line[len(name) + 1 : close])))
    return found
