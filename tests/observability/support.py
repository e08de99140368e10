"""Helpers of the observability tests: read /metrics samples, capture access-log lines."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.access_log import ACCESS_LOGGER
from tests.deploy.files import tool

# Bounds a wait for a condition that should hold at once; never a timing assertion.
WAIT_S = 15.0


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition: (name, labels) -> value."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    """The one sample of `name` with exactly `labels` (0 when absent)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def total(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples(text).items() if n == name and wanted <= set(have))


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics` on an exposition."""
    promtool = tool("promtool", "Debian's prometheus package: apt-get install prometheus")
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@contextmanager
def access_lines() -> Iterator[list[dict[str, Any]]]:
    """The access log's lines while the block runs (parsed)."""
    handler = _Lines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (a state the gateway reaches by itself) within a bound."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached: {what}")
        time.sleep(0.01)


def line_of(lines: list[dict[str, Any]], request_id: str) -> Mapping[str, Any]:
    """The access line of one request (written just after its last byte went out)."""
    wait_until(
        lambda: any(line["request_id"] == request_id for line in lines),
        f"the access line of {request_id}",
    )
    found = [line for line in lines if line["request_id"] == request_id]
    assert len(found) == 1, found
    return found[0]
