"""The fleet: every configured backend with its live state, indexed by the models it serves."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.fleet.adapters.base import EngineAdapter
from gateway.fleet.adapters.engines import adapter_for
from gateway.fleet.breaker import CircuitBreaker
from gateway.fleet.calibration import BackendCalibration, CalibrationDefaults, FleetPool
from gateway.fleet.prefill_queue import PrefillQueue
from gateway.settings import BackendSettings, CalibrationSettings

DEFAULT_BYTES_PER_TOKEN = 4.0
# Requests a backend takes at once when neither the config nor the engine says.
DEFAULT_MAX_CONCURRENCY = 256


def calibration_defaults(
    settings: BackendSettings,
    calibration: CalibrationSettings | None = None,
    bytes_per_token: float = DEFAULT_BYTES_PER_TOKEN,
) -> CalibrationDefaults:
    """A backend's configured starting points (its own, else the fleet-wide ones)."""
    learning = calibration if calibration is not None else CalibrationSettings()
    return CalibrationDefaults(
        bytes_per_token=settings.bytes_per_token or bytes_per_token,
        prefill_tokens_per_s=settings.prefill_tokens_per_s,
        itl_s=settings.decode_s_per_token,
        itl_batch_slope=settings.decode_batch_slope,
        kv_cache_tokens=settings.kv_cache_tokens,
        output_tokens=learning.output_tokens,
        window=learning.window,
        min_samples=learning.min_samples,
        learn=learning.learn,
    )


@dataclass
class BackendState:
    """What the gateway currently knows about a backend (mutated by the proxy and the poller)."""

    healthy: bool = True
    in_flight: int = 0
    prefill: PrefillQueue = field(default_factory=PrefillQueue)
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    learned_max_context: int | None = None
    learned_max_concurrency: int | None = None
    engine: EngineLoad | None = None
    # What the other gateway replicas said they have here (the load exchange), if anything.
    exchanged: ExchangedLoad | None = None
    # Among equal routing totals, lower goes first; the load exchange spreads replicas' ties
    # apart with it (0 everywhere while alone: ties break at random).
    tie_order: int = 0
    # Output tokens expected from the requests in flight, and of those already streaming how
    # many there are and the sum of their first-byte times: what they still owe is the first
    # less what their time streaming has paid off, in O(1) per decision.
    decode_tokens_ahead: float = 0.0
    decoding: int = 0
    decoding_since_sum: float = 0.0
    # Fed by every attempt's outcome (the proxy); read by routing and readiness.
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    def decode_tokens_owed(self, now: float, itl_s: float) -> float:
        """Output tokens the requests in flight still owe, about."""
        streamed = (self.decoding * now - self.decoding_since_sum) / itl_s if itl_s > 0 else 0.0
        return max(0.0, self.decode_tokens_ahead - streamed)

    @property
    def exchanged_in_flight(self) -> float:
        """Requests the other gateway replicas said they have in flight here (0 if unheard)."""
        return self.exchanged.in_flight if self.exchanged is not None else 0.0

    def foreign_requests(self) -> float:
        """Requests others sent here: the engine's gauges or the other replicas' own word."""
        engine = self.engine.foreign_requests if self.engine is not None else 0.0
        return max(engine, self.exchanged_in_flight)

    def others_waiting(self, now: float) -> bool:
        """Whether prefills others sent are ahead here (engine gauge or the replicas' books)."""
        if self.engine is not None and self.engine.foreign_waiting > 0:
            return True
        return self.exchanged is not None and self.exchanged.prefill_s_at(now) > 0

    def foreign_prefill_s(self, now: float, typical_s: float) -> float:
        """Seconds of prefill others sent here still ahead (waiting requests at `typical_s`).

        The engine's `waiting` gauge is up to a load poll old and does not count prefills it
        has begun; the replicas' own books are fresher. Both estimate the same work, so the
        larger counts (the gauge also sees clients that bypass the gateway).
        """
        engine = self.engine.foreign_waiting * typical_s if self.engine is not None else 0.0
        exchanged = self.exchanged.prefill_s_at(now) if self.exchanged is not None else 0.0
        return max(engine, exchanged)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """The engine's own load gauges, as last scraped from its metrics endpoint.

    Beside them, what this gateway itself had there at that moment: the gauges' excess over
    it is what other replicas and workers sent, which this process cannot see otherwise.
    """

    running: float
    waiting: float
    kv_usage: float | None
    sampled_at: float
    own_in_flight: int = 0
    own_prefilling: int = 0

    @property
    def foreign_waiting(self) -> float:
        """Requests waiting there that others sent."""
        return max(0.0, self.waiting - self.own_prefilling)

    @property
    def foreign_requests(self) -> float:
        """Requests running or waiting there that others sent."""
        return max(0.0, self.running + self.waiting - self.own_in_flight)


@dataclass(frozen=True, slots=True)
class ExchangedLoad:
    """What the other gateway replicas had on a backend, summed, as the load exchange read it.

    `prefill_s` is the prefill work their books still counted ahead, aged to `sampled_at`
    (this process's monotonic clock); it keeps draining as time passes.
    """

    in_flight: float
    prefill_s: float
    sampled_at: float

    def prefill_s_at(self, now: float) -> float:
        """The prefill seconds still ahead at `now`, had nothing been sent since."""
        return max(0.0, self.prefill_s - max(0.0, now - self.sampled_at))


@dataclass
class Backend:
    """One backend: its settings, its engine adapter, precomputed URLs and headers, live state."""

    settings: BackendSettings
    adapter: EngineAdapter
    calibration: BackendCalibration
    state: BackendState = field(default_factory=BackendState)
    chat_url: str = ""
    completions_url: str = ""
    auth_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def from_settings(
        cls,
        settings: BackendSettings,
        defaults: CalibrationDefaults | None = None,
        pool: FleetPool | None = None,
    ) -> Backend:
        """Build a backend with URLs and headers computed once."""
        adapter = adapter_for(settings.engine)
        key = settings.api_key.get_secret_value() if settings.api_key else None
        # A backend configured with a tokenizer ratio of its own does not pool it with others.
        calibration = BackendCalibration(
            defaults or calibration_defaults(settings),
            pool,
            pool_ratio=settings.bytes_per_token is None,
        )
        return cls(
            settings=settings,
            adapter=adapter,
            calibration=calibration,
            chat_url=settings.base_url + "/v1/chat/completions",
            completions_url=settings.base_url + "/v1/completions",
            auth_headers=adapter.auth_headers(key),
        )

    @property
    def id(self) -> str:
        """The backend's configured id."""
        return self.settings.id

    @property
    def id_bytes(self) -> bytes:
        """The id as header bytes."""
        return self.settings.id.encode()

    @property
    def max_context(self) -> int | None:
        """The configured context window, else the one the backend reported."""
        return self.settings.max_context or self.state.learned_max_context

    @property
    def max_concurrency(self) -> int:
        """Requests it takes at once: configured, else what the engine states, else 256."""
        configured = self.settings.max_concurrency
        return configured or self.state.learned_max_concurrency or DEFAULT_MAX_CONCURRENCY


class Fleet:
    """All backends, and which of them serve each model."""

    def __init__(self, backends: Iterable[Backend]) -> None:
        self.backends: list[Backend] = list(backends)
        self._by_model: dict[str, list[Backend]] = {}
        for backend in self.backends:
            for model in backend.settings.models:
                self._by_model.setdefault(model, []).append(backend)

    @classmethod
    def from_settings(
        cls,
        settings: Sequence[BackendSettings],
        calibration: CalibrationSettings | None = None,
        bytes_per_token: float = DEFAULT_BYTES_PER_TOKEN,
    ) -> Fleet:
        """Build the fleet from the configured backends (tokenizer ratios pooled per model)."""
        defaults = [calibration_defaults(item, calibration, bytes_per_token) for item in settings]
        # The pool starts from the fleet-wide ratio (a backend's own override stays its own).
        pool = (
            FleetPool(dataclasses.replace(defaults[0], bytes_per_token=bytes_per_token))
            if defaults
            else None
        )
        return cls(
            Backend.from_settings(item, item_defaults, pool)
            for item, item_defaults in zip(settings, defaults, strict=True)
        )

    def serving(self, model: str) -> list[Backend]:
        """Backends configured to serve `model` (empty when none does)."""
        return self._by_model.get(model, [])

    def models(self) -> dict[str, int | None]:
        """Every served model with the largest context window any of its backends offers."""
        result: dict[str, int | None] = {}
        for model, backends in self._by_model.items():
            windows = [b.max_context for b in backends if b.max_context is not None]
            result[model] = max(windows) if windows else None
        return result
