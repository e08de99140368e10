"""SIGTERM drains a real gateway process: readiness first, then in-flight work, then the rest."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from tests.support.gateway_process import GatewayProcess
from tests.support.harness import MODEL

# Bounds, not thresholds: how long a test waits for something before it fails.
JOIN_BOUND_S = 60.0


@dataclass
class StreamResult:
    """What one streaming client saw."""

    events: list[bytes] = field(default_factory=list)
    status: int | None = None
    error: str | None = None
    first_event: threading.Event = field(default_factory=threading.Event)


def stream(url: str, max_tokens: int, result: StreamResult) -> None:
    """Stream one chat completion, recording every SSE event."""
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "tell me a long story"}],
    }
    try:
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json=body, timeout=JOIN_BOUND_S
        ) as r:
            result.status = r.status_code
            for line in r.iter_lines():
                if line.startswith("data: "):
                    result.events.append(line[6:].encode())
                    result.first_event.set()
    except httpx.HTTPError as exc:
        result.error = repr(exc)
    finally:
        result.first_event.set()


def start_streams(
    url: str, n: int, max_tokens: int
) -> tuple[list[StreamResult], list[threading.Thread]]:
    results = [StreamResult() for _ in range(n)]
    threads = [threading.Thread(target=stream, args=(url, max_tokens, r)) for r in results]
    for thread in threads:
        thread.start()
    for result in results:
        assert result.first_event.wait(JOIN_BOUND_S)
    return results, threads


def in_flight(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    lines = [x for x in text.splitlines() if x.startswith("gateway_backend_in_flight{")]
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines)


def wait_in_flight(url: str, n: int) -> None:
    """Poll the gateway's own gauge (no event crosses the process boundary), bounded."""
    for _ in range(400):
        if in_flight(url) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"never saw {n} requests in flight")


@pytest.fixture
def slow_fleet(sim_fleet):
    # Real time: 20 ms per output token.
    return sim_fleet(1, time_scale=1.0, decode_s_per_token=0.02, prefill_tokens_per_s=1e6)


def test_sigterm_readyz_503_then_streams_finish_inside_the_drain_window(slow_fleet, tmp_path):
    gw = GatewayProcess(
        tmp_path, slow_fleet.backend_settings(), server={"drain_delay_s": 4, "drain_s": 30}
    ).start()
    try:
        results, threads = start_streams(gw.url, 4, max_tokens=40)
        gw.signal(signal.SIGTERM)
        gw.wait_for_line("draining:")
        ready = httpx.get(gw.url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["draining"] is True
        # Still accepting during the delay, so a load balancer has time to notice.
        chat = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat).status_code == 200
        for thread in threads:
            thread.join(JOIN_BOUND_S)
        for result in results:
            assert result.status == 200
            assert result.error is None
            assert result.events[-1] == b"[DONE]"
            assert not any(b'"error"' in event for event in result.events)
        assert gw.wait() == 0
    finally:
        gw.stop()


def test_streams_outliving_the_drain_end_with_an_in_band_error(slow_fleet, tmp_path):
    gw = GatewayProcess(
        tmp_path, slow_fleet.backend_settings(), server={"drain_delay_s": 0.2, "drain_s": 0.5}
    ).start()
    try:
        whole: dict[str, httpx.Response] = {}
        chat = {"model": MODEL, "max_tokens": 3000, "messages": [{"role": "user", "content": "x"}]}

        def not_streamed() -> None:
            whole["r"] = httpx.post(gw.url + "/v1/chat/completions", json=chat, timeout=60)

        waiting = threading.Thread(target=not_streamed)
        waiting.start()
        results, threads = start_streams(gw.url, 3, max_tokens=3000)
        wait_in_flight(gw.url, 4)
        gw.signal(signal.SIGTERM)
        for thread in [*threads, waiting]:
            thread.join(JOIN_BOUND_S)
        for result in results:
            assert result.status == 200
            assert result.error is None
            assert result.events[-1] == b"[DONE]"
            error = orjson.loads(result.events[-2])["error"]
            assert error["code"] == "shutting_down"
            assert set(error) == {"message", "type", "param", "code"}
        response = whole["r"]
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "shutting_down"
        assert gw.wait() == 0
        gw.wait_for_line("ending 4 requests")
    finally:
        gw.stop()
