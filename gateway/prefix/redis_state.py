"""Per-backend state the Redis index shares across replicas: epochs and insertion counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.prefix.staleness import StalenessModel


class SharedBackendState:
    """Local deltas waiting to be pushed, and how a pulled snapshot updates the staleness model.

    The snapshot is the flat HGETALL of the state HASH: ``e:<backend>`` → epoch start in ms,
    ``n:<backend>`` → blocks inserted by every replica (monotonic while Redis keeps it).
    """

    def __init__(self, model: StalenessModel) -> None:
        self._model = model
        self._inserts: dict[str, int] = {}
        self._epochs: dict[str, int] = {}

    def add_inserted(self, backend: str, blocks: int) -> None:
        """Count blocks a record inserted (pushed at the next sync)."""
        self._inserts[backend] = self._inserts.get(backend, 0) + blocks

    def add_epoch(self, backend: str, epoch_ms: int) -> None:
        """A backend restarted (pushed at the next sync; the highest epoch wins)."""
        self._epochs[backend] = max(self._epochs.get(backend, -1), epoch_ms)

    def take(self, ttl_ms: int) -> tuple[list[Any], dict[str, int], dict[str, int]]:
        """Sync script arguments and the deltas they carry (to requeue if the push fails)."""
        epochs, self._epochs = self._epochs, {}
        inserts, self._inserts = self._inserts, {}
        args: list[Any] = [ttl_ms, len(epochs)]
        for backend, epoch_ms in epochs.items():
            args += (backend, epoch_ms)
        for backend, count in inserts.items():
            args += (backend, count)
        return args, epochs, inserts

    def requeue(self, epochs: dict[str, int], inserts: dict[str, int]) -> None:
        """Put back deltas whose push failed."""
        for backend, epoch_ms in epochs.items():
            self.add_epoch(backend, epoch_ms)
        for backend, count in inserts.items():
            self.add_inserted(backend, count)

    def apply(self, flat: Sequence[bytes], now: float) -> None:
        """Feed a pulled snapshot into the staleness model (tracked backends only)."""
        model = self._model
        unseen = set(model.backends())
        for i in range(0, len(flat) - 1, 2):
            name = flat[i].decode("utf-8", "replace")
            backend = name[2:]
            if not model.tracks(backend):
                continue
            value = int(flat[i + 1])
            if name.startswith("e:"):
                model.raise_epoch(backend, value / 1000.0)
            elif name.startswith("n:"):
                unseen.discard(backend)
                model.observe_total(backend, value, now)
        for backend in unseen:  # no shared counter yet: it starts from zero
            model.observe_total(backend, 0, now)
