"""Prometheus exposition of the Python engines, written by prometheus_client itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Samples = Sequence[tuple[Mapping[str, str], float]]


class _Fixed(Collector):
    """A collector returning the families it was given."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class Families:
    """Metric families of one scrape; label names are written sorted, as vLLM's are."""

    def __init__(self, created: float) -> None:
        self._families: list[Metric] = []
        self._created = created

    def gauge(self, name: str, help_text: str, samples: Samples) -> None:
        """A gauge family (value per label set)."""
        names = _label_names(samples)
        family = GaugeMetricFamily(name, help_text, labels=names)
        for labels, value in samples:
            family.add_metric([labels[n] for n in names], value)
        self._families.append(family)

    def counter(self, name: str, help_text: str, samples: Samples) -> None:
        """A counter family: `<name>_total` plus the `<name>_created` gauge."""
        names = _label_names(samples)
        family = CounterMetricFamily(name, help_text, labels=names)
        for labels, value in samples:
            family.add_metric([labels[n] for n in names], value, created=self._created)
        self._families.append(family)

    def process_start(self, started_at: float) -> None:
        """The process collector's start-time gauge (unix seconds)."""
        self.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            [({}, started_at)],
        )

    def render(self) -> bytes:
        """The exposition text."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(self._families))
        return generate_latest(registry)


def _label_names(samples: Samples) -> list[str]:
    return sorted(samples[0][0]) if samples else []
