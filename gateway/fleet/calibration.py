"""What the gateway learns about a backend from what it reports, starting from the configuration.

Nothing here assumes a tokenizer, a KV size or a speed: each value starts at the configured
one and is replaced by what the engine's own reports show once there are enough of them.
- bytes per token: the rendered prompt's bytes against `usage.prompt_tokens`;
- prefill speed: uncached tokens against the time to first byte of requests that did not queue;
- inter-token latency as a function of the running batch: from decode times in `usage`;
- KV capacity: from the engine's own description of its cache (see the adapters).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_WINDOW = 64
DEFAULT_MIN_SAMPLES = 8
# How far apart samples must lie along x before a slope is learned from them.
PREFILL_MIN_SPREAD_TOKENS = 128.0
DECODE_MIN_SPREAD_BATCH = 1.0
# Pooled estimates see every backend's traffic: they keep proportionally more of it.
POOLED_WINDOW_FACTOR = 4
# A window past EAGER_REFIT_SAMPLES is refitted once 1/REFIT_FRACTION of it is new: a sample
# costs a constant share of a refit instead of a whole one (a pooled line of 256 samples
# refitted per request cost more than the rest of the request), and the value lags the
# window by at most that fraction. Smaller windows are cheap to refit on every sample.
REFIT_FRACTION = 4
EAGER_REFIT_SAMPLES = 32


def _refit_due(samples: int, new: int, min_samples: int) -> bool:
    """Whether `new` samples since the last fit call for another, with `samples` in the window."""
    if samples < min_samples:
        return False
    return samples <= EAGER_REFIT_SAMPLES or new * REFIT_FRACTION >= samples


def weighted_median(values: list[float], weights: list[float]) -> float:
    """The value at half the total weight (the lower one on an exact tie)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    half = sum(weights) / 2
    running = 0.0
    for i in order:
        running += weights[i]
        if running >= half:
            return values[i]
    return values[order[-1]]


class RobustEstimate:
    """A weighted median of the recent samples; the configured value until there are enough.

    A median ignores the outliers a mean would follow (a prompt of odd text, a request that
    waited behind another replica's traffic); the window lets the value follow a change.
    """

    __slots__ = ("_new", "_samples", "_value", "configured", "min_samples")

    def __init__(
        self,
        configured: float,
        *,
        window: int = DEFAULT_WINDOW,
        min_samples: int = DEFAULT_MIN_SAMPLES,
    ) -> None:
        self.configured = configured
        self.min_samples = min_samples
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)
        self._value = configured
        self._new = 0

    def add(self, value: float, weight: float = 1.0) -> None:
        """One observation, weighted (by tokens, typically)."""
        if not value > 0 or not weight > 0:
            return
        self._samples.append((value, weight))
        self._new += 1
        if _refit_due(len(self._samples), self._new, self.min_samples):
            self._new = 0
            values = [v for v, _ in self._samples]
            weights = [w for _, w in self._samples]
            self._value = weighted_median(values, weights)

    @property
    def value(self) -> float:
        """The learned value, or the configured one while too few samples came in."""
        return self._value

    @property
    def learned(self) -> bool:
        """True once the value comes from observations."""
        return len(self._samples) >= self.min_samples

    @property
    def samples(self) -> int:
        """Observations in the window."""
        return len(self._samples)


class RobustLine:
    """y = intercept + slope * x over the recent samples, the slope never negative.

    Weighted least squares, refitted without the samples far off the first fit (three
    median absolute residuals), so a request that met a hiccup does not tilt the line. The
    configured line holds until `min_samples` observations came in; samples that do not
    spread along x by at least `min_spread` keep the configured slope and fit the intercept.
    """

    __slots__ = (
        "_new",
        "_samples",
        "configured_slope",
        "intercept",
        "min_samples",
        "min_spread",
        "slope",
    )

    def __init__(
        self,
        intercept: float,
        slope: float = 0.0,
        *,
        window: int = DEFAULT_WINDOW,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        min_spread: float = 0.0,
    ) -> None:
        self.intercept = intercept
        self.slope = slope
        self.configured_slope = slope
        self.min_samples = min_samples
        self.min_spread = min_spread
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=window)
        self._new = 0

    def add(self, x: float, y: float, weight: float = 1.0) -> None:
        """One observation."""
        if not y > 0 or not weight > 0 or x < 0:
            return
        self._samples.append((x, y, weight))
        self._new += 1
        if _refit_due(len(self._samples), self._new, self.min_samples):
            self._new = 0
            self._refit()

    def _refit(self) -> None:
        samples: list[tuple[float, float, float]] | deque[tuple[float, float, float]]
        samples = self._samples
        fit = _LineSums.of(samples)
        if fit.spread <= self.min_spread:
            # Nothing to learn a slope from: keep the configured one, place the line.
            self.slope = self.configured_slope
            self.intercept = max(0.0, fit.mean_y - self.slope * fit.mean_x)
            return
        intercept, slope = fit.line()
        residuals = sorted(abs(y - (intercept + slope * x)) for x, y, _ in samples)
        spread = residuals[len(residuals) // 2] * 3.0
        if spread > 0:
            kept = [s for s in samples if abs(s[1] - (intercept + slope * s[0])) <= spread]
            if len(kept) >= max(3, len(samples) // 2):
                samples, fit = kept, _LineSums.of(kept)
                intercept, slope = fit.line()
        if slope <= 0.0:
            slope, intercept = 0.0, fit.mean_y
        self.intercept = max(intercept, 0.0)
        self.slope = slope

    def at(self, x: float) -> float:
        """The fitted y at `x`."""
        return self.intercept + self.slope * x

    @property
    def learned(self) -> bool:
        """True once the fit comes from observations."""
        return len(self._samples) >= self.min_samples


class BatchLatencyFit(RobustLine):
    """Inter-token latency against the running batch: itl(n) = base + slope * (n - 1).

    Real engines decode a batch in one step whose time grows with the batch, so a backend
    carrying more running requests streams each of them slower.
    """

    __slots__ = ()

    def observe(self, batch: float, itl_s: float, tokens: float) -> None:
        """A request decoded `tokens` at `itl_s` each while about `batch` requests ran."""
        if batch >= 1:
            self.add(batch - 1.0, itl_s, tokens)

    @property
    def base(self) -> float:
        """Seconds per token of a request decoding alone."""
        return max(self.intercept, 1e-6)

    def itl_s(self, batch: float) -> float:
        """Predicted seconds per output token with `batch` requests running (at least one)."""
        return self.base + self.slope * max(0.0, batch - 1.0)


class PrefillFit:
    """Prefill speed from (uncached tokens, time to first byte) of requests that did not queue.

    The time to first byte holds a fixed part too (the request's trip, tokenizing, the first
    decode step) that would make short prefills look slow; a line through the samples puts
    it in the intercept, and its slope is seconds per token. Until the samples spread enough
    for a slope, the token-weighted median of tokens ÷ seconds stands in.
    """

    __slots__ = ("line", "ratio")

    def __init__(self, configured_tokens_per_s: float, *, window: int, min_samples: int) -> None:
        self.line = RobustLine(
            0.0, 0.0, window=window, min_samples=min_samples, min_spread=PREFILL_MIN_SPREAD_TOKENS
        )
        self.ratio = RobustEstimate(configured_tokens_per_s, window=window, min_samples=min_samples)

    def add(self, tokens: float, seconds: float) -> None:
        """One request that prefilled `tokens` before its first byte came `seconds` later."""
        self.line.add(tokens, seconds)
        self.ratio.add(tokens / seconds, tokens)

    @property
    def value(self) -> float:
        """Tokens per second."""
        if self.line.learned and self.line.slope > 0:
            return 1.0 / self.line.slope
        return self.ratio.value

    @property
    def configured(self) -> float:
        """The configured speed, the starting point."""
        return self.ratio.configured

    @property
    def learned(self) -> bool:
        """True once the speed comes from observations."""
        return self.ratio.learned


@dataclass(frozen=True, slots=True)
class _LineSums:
    """Weighted means and (co)variance of (x, y, weight) samples, summed in one pass."""

    mean_x: float
    mean_y: float
    var_x: float
    cov_xy: float
    spread: float  # max x - min x

    @staticmethod
    def of(samples: Iterable[tuple[float, float, float]]) -> _LineSums:
        """The sums of `samples` (at least one, weights positive)."""
        sw = swx = swy = swxx = swxy = 0.0
        low, high = math.inf, -math.inf
        for x, y, w in samples:
            sw += w
            swx += w * x
            swy += w * y
            swxx += w * x * x
            swxy += w * x * y
            low = min(low, x)
            high = max(high, x)
        mean_x, mean_y = swx / sw, swy / sw
        return _LineSums(
            mean_x, mean_y, swxx / sw - mean_x * mean_x, swxy / sw - mean_x * mean_y, high - low
        )

    def line(self) -> tuple[float, float]:
        """Intercept and slope of the weighted least-squares line."""
        if self.var_x <= 0.0:
            return self.mean_y, 0.0
        slope = self.cov_xy / self.var_x
        return self.mean_y - slope * self.mean_x, slope


@dataclass(frozen=True, slots=True)
class CalibrationDefaults:
    """The configured starting points and the learning window of one backend."""

    bytes_per_token: float
    prefill_tokens_per_s: float
    itl_s: float
    itl_batch_slope: float  # fraction of itl_s added per extra running request
    kv_cache_tokens: int
    output_tokens: float
    window: int = DEFAULT_WINDOW
    min_samples: int = DEFAULT_MIN_SAMPLES
    learn: bool = True


class ModelCalibration:
    """What one backend's engine has shown about one model it serves."""

    __slots__ = ("bytes_per_token", "prefill_speed")

    def __init__(self, defaults: CalibrationDefaults) -> None:
        window, least = defaults.window, defaults.min_samples
        self.bytes_per_token = RobustEstimate(
            defaults.bytes_per_token, window=window, min_samples=least
        )
        self.prefill_speed = PrefillFit(
            defaults.prefill_tokens_per_s, window=window, min_samples=least
        )


class PooledModel:
    """What every backend serving one model has shown, relative to each one's configuration.

    - bytes per token: the same model has the same tokenizer wherever it runs;
    - prefill speed as a multiple of the configured one: how far off the configuration is,
      for backends that have not shown their own speed yet;
    - inter-token latency as a multiple of the configured one, against the running batch:
      each request's decode also carries whatever prefill shared its steps, which makes one
      backend's own samples too noisy to rank backends by, while the fleet's together give
      a steady line; backends then differ by their configured speed and their batch;
    - output tokens: how long this model's answers run.
    """

    __slots__ = ("bytes_per_token", "decode", "output_tokens", "prefill_scale")

    def __init__(self, defaults: CalibrationDefaults) -> None:
        window, least = defaults.window, defaults.min_samples
        self.bytes_per_token = RobustEstimate(
            defaults.bytes_per_token, window=window, min_samples=least
        )
        self.prefill_scale = RobustEstimate(1.0, window=window, min_samples=least)
        self.decode = BatchLatencyFit(
            1.0,
            defaults.itl_batch_slope,
            window=window * POOLED_WINDOW_FACTOR,
            min_samples=least,
            min_spread=DECODE_MIN_SPREAD_BATCH,
        )
        self.output_tokens = RobustEstimate(
            defaults.output_tokens, window=window * POOLED_WINDOW_FACTOR, min_samples=least
        )


class FleetPool:
    """The pooled calibration of every model the fleet serves (one per fleet, passed in)."""

    __slots__ = ("_by_model", "defaults")

    def __init__(self, defaults: CalibrationDefaults) -> None:
        self.defaults = defaults
        self._by_model: dict[str, PooledModel] = {}

    def model(self, model: str) -> PooledModel:
        """The pooled calibration of one model."""
        found = self._by_model.get(model)
        if found is None:
            found = self._by_model[model] = PooledModel(self.defaults)
        return found


class BackendCalibration:
    """Per model: tokenizer ratio, prefill speed, decode latency; per backend: KV capacity.

    A backend's own reports decide its bytes per token and prefill speed once it has enough
    of them; before that the `pool` (what the whole fleet has shown) stands in. A backend
    configured with a tokenizer ratio of its own (`pool_ratio` False) keeps it until then.
    """

    __slots__ = (
        "_models",
        "_pool",
        "_pool_ratio",
        "defaults",
        "engine_block_tokens",
        "engine_kv_tokens",
    )

    def __init__(
        self,
        defaults: CalibrationDefaults,
        pool: FleetPool | None = None,
        *,
        pool_ratio: bool = True,
    ) -> None:
        self.defaults = defaults
        self._pool = pool if pool is not None else FleetPool(defaults)
        self._pool_ratio = pool_ratio
        self._models: dict[str, ModelCalibration] = {}
        self.engine_kv_tokens: int | None = None
        self.engine_block_tokens: int | None = None

    def model(self, model: str) -> ModelCalibration:
        """The calibration of one model (created at the configured values)."""
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = ModelCalibration(self.defaults)
        return found

    def pooled(self, model: str) -> PooledModel:
        """What the whole fleet has shown about one model."""
        return self._pool.model(model)

    def bytes_per_token(self, model: str) -> float:
        """Rendered prompt bytes per engine token."""
        found = self._models.get(model)
        if found is not None and found.bytes_per_token.learned:
            return found.bytes_per_token.value
        if self._pool_ratio:
            return self._pool.model(model).bytes_per_token.value
        return self.defaults.bytes_per_token

    def prefill_tokens_per_s(self, model: str) -> float:
        """Uncached prompt tokens prefilled per second."""
        found = self._models.get(model)
        if found is not None and found.prefill_speed.learned:
            return found.prefill_speed.value
        return self.defaults.prefill_tokens_per_s * self._pool.model(model).prefill_scale.value

    def itl_s(self, model: str, batch: float) -> float:
        """Seconds per output token with `batch` requests running."""
        return self.defaults.itl_s * self._pool.model(model).decode.itl_s(batch)

    def output_tokens(self, model: str) -> RobustEstimate:
        """How long this model's answers run."""
        return self._pool.model(model).output_tokens

    @property
    def kv_cache_tokens(self) -> int:
        """KV capacity in tokens: what the engine says, else the configured value."""
        return self.engine_kv_tokens or self.defaults.kv_cache_tokens

    def observe_prompt(self, model: str, rendered_bytes: int, prompt_tokens: int) -> None:
        """The engine counted `prompt_tokens` for a prompt the gateway rendered to these bytes."""
        if self.defaults.learn and prompt_tokens > 0 and rendered_bytes > 0:
            ratio = rendered_bytes / prompt_tokens
            self.model(model).bytes_per_token.add(ratio, prompt_tokens)
            if self._pool_ratio:
                self._pool.model(model).bytes_per_token.add(ratio, prompt_tokens)

    def observe_prefill(self, model: str, uncached_tokens: float, seconds: float) -> None:
        """A request that did not queue prefilled `uncached_tokens` in `seconds`."""
        if self.defaults.learn and seconds > 0 and uncached_tokens > 0:
            speed = self.model(model).prefill_speed
            speed.add(uncached_tokens, seconds)
            if speed.learned:
                scale = speed.value / self.defaults.prefill_tokens_per_s
                self._pool.model(model).prefill_scale.add(scale)

    def observe_decode(self, model: str, tokens: int, seconds: float, batch: float) -> None:
        """`tokens` output tokens streamed in `seconds` while about `batch` requests ran."""
        if not self.defaults.learn or tokens < 1:
            return
        pooled = self._pool.model(model)
        pooled.output_tokens.add(float(tokens))
        if tokens >= 2 and seconds > 0:
            relative = seconds / (tokens - 1) / self.defaults.itl_s
            pooled.decode.observe(batch, relative, tokens - 1)

    def learn_engine_cache(self, kv_tokens: int | None, block_tokens: int | None) -> bool:
        """The engine described its KV cache; True when the capacity changed."""
        if block_tokens:
            self.engine_block_tokens = block_tokens
        if kv_tokens and kv_tokens != self.engine_kv_tokens:
            self.engine_kv_tokens = kv_tokens
            return True
        return False
