"""The engine adapter interface, with the behaviour most OpenAI-compatible engines share."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

import orjson

from gateway.errors import GatewayError
from gateway.fleet.promtext import collect_samples


class LoadSample(NamedTuple):
    """Load gauges read from one scrape of an engine's metrics."""

    running: float
    waiting: float
    kv_usage: float | None
    lifetime_counter: float | None
    started_at: float | None = None


class EngineCache(NamedTuple):
    """The engine's own description of its KV cache."""

    capacity_tokens: int | None
    block_tokens: int | None


class EngineLimits(NamedTuple):
    """What the engine says it takes: one request's context, and requests at once."""

    max_context: int | None
    max_concurrency: int | None


def positive_int(value: Any) -> int | None:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _first(values: dict[str, float], names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in values:
            return values[name]
    return None


def _status_for_upstream(status: int) -> int:
    """The status the client sees for a backend's error status.

    Only 4xx and 5xx pass as errors: an interim, a success other than the relayed 200, a
    redirect or a status past 599 is no answer a client can take from an inference route
    (a 204 relayed with an error body would desync its keep-alive), so it becomes a 502.
    """
    if status in (422, 424):
        return 400 if status == 422 else 502
    if status == 500 or not 400 <= status <= 599:
        return 502
    return status


def retry_after_seconds(value: bytes | None, now: float | None = None) -> int | None:
    """A `Retry-After` header as whole seconds from now (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return int(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    moment = time.time() if now is None else now
    return max(0, math.ceil(when.timestamp() - moment))


class EngineAdapter:
    """How to talk to one engine kind: health path, auth headers, error shapes."""

    kind = "openai"
    health_path = "/health"
    metrics_path: str | None = "/metrics"
    # Takes `stream_options.include_usage`, so the gateway may ask for usage on every stream.
    accepts_stream_options = True
    # Takes an integer request `priority` (lower is sooner); others would reject the field.
    accepts_priority = False
    # Engine metric names, first found wins; the lifetime counter only grows until a restart.
    running_metrics: tuple[str, ...] = ()
    waiting_metrics: tuple[str, ...] = ()
    kv_usage_metrics: tuple[str, ...] = ()
    lifetime_counters: tuple[str, ...] = ()
    # When the engine process started (unix seconds): a later value means it restarted.
    start_time_metrics: tuple[str, ...] = ()
    # Where the engine describes itself as JSON (its KV capacity among other things).
    info_path: str | None = None

    def parse_cache(self, metrics_text: str) -> EngineCache | None:
        """The KV cache as the engine's metrics describe it (None when they don't)."""
        return None

    def parse_info(self, info: Any) -> EngineCache | None:
        """The KV cache as the engine's info document describes it (None when it doesn't)."""
        return None

    def parse_limits(self, info: Any) -> EngineLimits | None:
        """The request limits the engine's info document states (None when it doesn't)."""
        return None

    def parse_load(self, text: str) -> LoadSample | None:
        """Read running/waiting/KV-usage gauges from a metrics scrape (None if absent)."""
        wanted = {
            *self.running_metrics,
            *self.waiting_metrics,
            *self.kv_usage_metrics,
            *self.lifetime_counters,
            *self.start_time_metrics,
        }
        samples = collect_samples(text, wanted)
        totals = {name: sum(values) for name, values in samples.items()}
        # KV usage is a fraction per engine (data-parallel ranks): average it, don't add it up.
        means = {name: sum(values) / len(values) for name, values in samples.items()}
        maxima = {name: max(values) for name, values in samples.items()}
        running = _first(totals, self.running_metrics)
        waiting = _first(totals, self.waiting_metrics)
        if running is None and waiting is None:
            return None
        return LoadSample(
            running or 0.0,
            waiting or 0.0,
            _first(means, self.kv_usage_metrics),
            _first(totals, self.lifetime_counters),
            _first(maxima, self.start_time_metrics),
        )

    def auth_headers(self, api_key: str | None) -> list[tuple[bytes, bytes]]:
        """Headers to send upstream so the backend accepts the request."""
        if not api_key:
            return []
        return [(b"authorization", b"Bearer " + api_key.encode())]

    def normalize_error(
        self, status: int, body: bytes, retry_after: bytes | None = None
    ) -> GatewayError:
        """Turn a backend's error response into the OpenAI shape with a sensible status.

        A 429 or 503 keeps the backend's own `Retry-After` (`retry_after`, the raw header),
        else gets 1 s.
        """
        if not 400 <= status <= 599:
            return GatewayError(
                502, f"backend answered HTTP {status}, neither an answer nor an error"
            )
        client_status = _status_for_upstream(status)
        message, param, code = self._parse_error_body(body)
        if message is None:
            text = body[:200].decode("utf-8", "replace").strip()
            message = text or f"backend answered HTTP {status}"
        retry_after_s = None
        if client_status in (429, 503):
            retry_after_s = retry_after_seconds(retry_after) or 1
        return GatewayError(
            client_status, message, param=param, code=code, retry_after_s=retry_after_s
        )

    def normalize_stream_error(self, event: Any) -> GatewayError:
        """Turn an in-band error event (already parsed JSON) into the OpenAI shape."""
        message, param, code = self._error_fields(event)
        status = 500
        inner = event.get("error") if isinstance(event, dict) else None
        if isinstance(inner, dict):
            for key in ("code", "http_status_code"):
                if isinstance(inner.get(key), int):
                    status = int(inner[key])
        error = GatewayError(
            _status_for_upstream(status), message or "backend stream failed", param=param, code=code
        )
        return error

    def _parse_error_body(self, body: bytes) -> tuple[str | None, str | None, str | None]:
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return None, None, None
        return self._error_fields(data)

    def _error_fields(self, data: Any) -> tuple[str | None, str | None, str | None]:
        """Read message, param and code from the shapes engines use.

        Nested `{"error": {...}}` (OpenAI, current vLLM), flat `{"object": "error", "message"}`
        (older vLLM, SGLang) and flat `{"error": "text", "error_type"}` (TGI).
        """
        if not isinstance(data, dict):
            return None, None, None
        inner = data.get("error")
        if isinstance(inner, dict):
            data = inner
        elif isinstance(inner, str):
            error_type = data.get("error_type")
            return inner, None, error_type if isinstance(error_type, str) else None
        message = data.get("message")
        param = data.get("param")
        code = data.get("code")
        return (
            message if isinstance(message, str) else None,
            param if isinstance(param, str) else None,
            code if isinstance(code, str) else None,
        )
