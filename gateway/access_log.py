"""One record per inference request, closed once: outcome, latency, token and cost metrics,
and one JSON line on the `gateway.access` logger."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.accounting import Charge, Prices
from gateway.errors import GatewayError
from gateway.fleet.registry import Backend
from gateway.metrics import GatewayMetrics
from gateway.proxy.forward import ProxyOutcome, charge_of
from gateway.routing.filters import LaneFilter
from gateway.routing.types import RouteRequest
from gateway.settings import AccessLogSettings, LaneSettings

ACCESS_LOGGER = "gateway.access"
# Held access lines are written at once when they reach this size.
FLUSH_BYTES = 64 * 1024
# Lane labels: no lanes configured; not known (the request ended before it was placed).
NO_LANE = "default"
UNKNOWN = "none"
CLIENT_CLOSED = 499
# The gateway's own error codes, kept as the `reason` label; any other error (an engine's
# code passed through) is `upstream_error` once a backend answered, so labels stay bounded.
GATEWAY_REASONS = frozenset(
    {
        "capacity_exceeded",
        "context_length_exceeded",
        "invalid_api_key",
        "invalid_service_tier",
        "json_too_deep",
        "model_not_found",
        "no_backend_available",
        "no_backend_for_tier",
        "no_backend_in_lane",
        "rate_limit_exceeded",
        "request_too_large",
        "service_tier_not_allowed",
        "shutting_down",
        "too_many_messages",
        "upstream_timeout",
    }
)


def error_reason(error: GatewayError, outcome: ProxyOutcome) -> str:
    """The bounded `reason` label of a request answered with `error`."""
    if error.code in GATEWAY_REASONS:
        return error.code
    if outcome.attempts:
        return "upstream_error"
    return "invalid_request" if error.status < 500 else "gateway_error"


def status_class(status: int) -> str:
    """`2xx`, `4xx`, `5xx` (and `499`: the client went away)."""
    return "499" if status == CLIENT_CLOSED else f"{status // 100}xx"


class LineHandler(logging.Handler):
    """Writes each record's message as one line on stdout or stderr (looked up at each write,
    so a replaced stream is followed)."""

    def __init__(self, stream: str) -> None:
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        """One line, flushed."""
        try:
            self.write((record.getMessage() + "\n").encode())
        except Exception:  # a logging handler must not raise into the request
            self.handleError(record)

    def write(self, line: bytes) -> None:
        """Write one encoded line and flush it."""
        out = sys.stdout if self.stream == "stdout" else sys.stderr
        binary = getattr(out, "buffer", None)
        if binary is not None:
            out.flush()  # anything written as text goes first
            binary.write(line)
            binary.flush()
        else:
            out.write(line.decode())
            out.flush()


class AccessLog:
    """One JSON line per request on the `gateway.access` logger.

    The logger gets a `LineHandler` of its own (bare lines, not the server log's format) and
    does not propagate; a test or an operator may add handlers of their own to it.
    """

    def __init__(self, settings: AccessLogSettings, logger: logging.Logger | None = None) -> None:
        self.include_prompt = settings.include_prompt
        self._interval = settings.flush_interval_s
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False
        for handler in self._logger.handlers:
            if isinstance(handler, LineHandler):
                handler.stream = settings.stream  # a reload may move it
                break
        else:
            handler = LineHandler(settings.stream)
            self._logger.addHandler(handler)
        self._handler = handler
        self._alone = [handler]

    def write(self, line: dict[str, Any]) -> None:
        """Log one line (serialized once, by orjson).

        While the logger has only its own handler the line goes straight to it: a log record
        (caller lookup, record, handler lock) would cost about twice the line itself. Lines
        are then held up to `flush_interval_s` and written together (a write and a flush per
        line were most of its cost), sooner once `FLUSH_BYTES` are waiting.
        """
        logger = self._logger
        data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        if logger.handlers != self._alone or not logger.isEnabledFor(logging.INFO):
            logger.info(data[:-1].decode())
            return
        if self._interval <= 0:
            self._handler.write(data)
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on the event loop: nothing would flush it later
                self.flush()
                return
            self._timer = loop.call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Write the lines held so far."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._handler.write(data)


class LaneNames:
    """The lane a request belongs to, as the admission stage's lane filter chooses it."""

    def __init__(self, lanes: Sequence[LaneSettings], default_output_tokens: float) -> None:
        self._filter = LaneFilter(lanes, default_output_tokens) if lanes else None

    def of(self, route: RouteRequest, candidates: Sequence[Backend]) -> str:
        """The lane's name (`default` without lanes)."""
        if self._filter is None or not candidates:
            return NO_LANE
        return self._filter.lane_of(route, candidates).name


@dataclass(slots=True)
class RequestRecord:
    """What one inference request was, filled in as it goes."""

    request_id: bytes
    route: str
    started: float
    tenant: str | None = None
    tier: str | None = None
    lane: str = UNKNOWN
    model: str | None = None
    stream: bool = False
    prompt: Any = None


class Ledger:
    """Closes request records into the catalog's metrics and the access log."""

    def __init__(
        self, metrics: GatewayMetrics, prices: Prices, access_log: AccessLog | None
    ) -> None:
        self._metrics = metrics
        self._prices = prices
        self.access_log = access_log

    def close(self, record: RequestRecord, outcome: ProxyOutcome, status: int, reason: str) -> None:
        """Count the request by outcome, its latencies, tokens and cost; write its line."""
        ended = time.perf_counter()
        charge = None
        if status == 200 and record.model is not None:
            charge = charge_of(outcome, self._prices, record.model)
        tier = record.tier
        ttft = itl = None
        by_lane = self._metrics.tier_lane(tier or UNKNOWN, record.lane)
        by_lane.outcome(status_class(status), reason).inc()
        if tier is not None:
            if status == 200:
                by_lane.e2e.observe(ended - record.started)
            if outcome.attempts > 1:
                by_lane.failovers.inc(outcome.attempts - 1)
            first = outcome.first_byte_at
            if record.stream and first is not None:
                ttft = first - record.started
                by_lane.ttft.observe(ttft)
                if charge is not None and charge.completion_tokens > 1:
                    itl = (ended - first) / (charge.completion_tokens - 1)
                    by_lane.itl.observe(itl)
            if charge is not None and record.tenant is not None and record.model is not None:
                self._metrics.tenant(record.tenant, tier, record.model).charged(
                    charge.prompt_tokens,
                    charge.completion_tokens,
                    charge.cache_read_tokens,
                    charge.cache_write_tokens,
                    charge.cost_usd,
                    charge.savings_usd,
                )
        if self.access_log is not None:
            self.access_log.write(_line(record, outcome, status, reason, charge, ttft, itl, ended))


def _line(
    record: RequestRecord,
    outcome: ProxyOutcome,
    status: int,
    reason: str,
    charge: Charge | None,
    ttft: float | None,
    itl: float | None,
    ended: float,
) -> dict[str, Any]:
    backend = outcome.backend
    line: dict[str, Any] = {
        "ts": time.time(),
        "request_id": record.request_id.decode("latin-1"),
        "route": record.route,
        "tenant": record.tenant,
        "tier": record.tier,
        "lane": record.lane,
        "model": record.model,
        "stream": record.stream,
        "backend": backend.id if backend is not None else None,
        "attempts": outcome.attempts,
        "status": status,
        "reason": reason,
        "prompt_tokens": None,
        "cached_tokens": None,
        "cache_write_tokens": None,
        "completion_tokens": None,
        "cost_usd": None,
        "savings_usd": None,
        "ttft_s": ttft,
        "itl_s": itl,
        "duration_s": ended - record.started,
    }
    if charge is not None:
        line["prompt_tokens"] = charge.prompt_tokens
        line["cached_tokens"] = charge.cache_read_tokens
        line["cache_write_tokens"] = charge.cache_write_tokens
        line["completion_tokens"] = charge.completion_tokens
        line["cost_usd"] = charge.cost_usd
        line["savings_usd"] = charge.savings_usd
    if record.prompt is not None:
        line["prompt"] = record.prompt
    return line
