"""The JSON access log (one line per request, prompts only when asked) and the explain gate."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import pytest

from gateway.access_log import ACCESS_LOGGER, FLUSH_BYTES, AccessLog, LineHandler
from gateway.settings import AccessLogSettings
from tests.observability.support import access_lines, line_of, wait_until
from tests.support.harness import MODEL, GatewayHandle, SimFleetHandle

SECRET = "the launch code is 0000"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": SECRET}], "max_tokens": 3}
FIELDS = {
    "ts", "request_id", "route", "tenant", "tier", "lane", "model", "stream", "backend",
    "attempts", "status", "reason", "prompt_tokens", "cached_tokens", "cache_write_tokens",
    "completion_tokens", "cost_usd", "savings_usd", "ttft_s", "itl_s", "duration_s",
}  # fmt: skip


def test_one_line_per_request_without_the_prompt(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(1)
    gw = gateway(
        fleet.backend_settings(reports_cached_tokens=True),
        pricing={MODEL: {"input": 1.0, "output": 2.0}},
    )
    with access_lines() as lines, httpx.Client(base_url=gw.url, timeout=10) as client:
        r = client.post("/v1/chat/completions", json=CHAT)
        line = line_of(lines, r.headers["x-request-id"])
        missing = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
        refused = line_of(lines, missing.headers["x-request-id"])
    assert set(line) == FIELDS
    assert SECRET not in json.dumps(line)
    assert line["tenant"] == "default"
    assert line["tier"] == "standard"
    assert line["backend"] == "sim-0"
    assert line["attempts"] == 1
    assert (line["status"], line["reason"], line["model"]) == (200, "ok", MODEL)
    assert line["prompt_tokens"] == r.json()["usage"]["prompt_tokens"]
    assert line["completion_tokens"] == 3
    assert line["cached_tokens"] == int(r.headers["x-gateway-cache-read-tokens"])
    assert line["cache_write_tokens"] == int(r.headers["x-gateway-cache-write-tokens"])
    # No cache prices configured: reads and writes cost the input price.
    assert line["cost_usd"] == pytest.approx((line["prompt_tokens"] * 1.0 + 3 * 2.0) / 1e6)
    assert line["savings_usd"] == 0.0
    assert line["duration_s"] > 0
    assert line["ttft_s"] is None
    assert (refused["status"], refused["reason"], refused["backend"]) == (
        404,
        "model_not_found",
        None,
    )
    assert refused["prompt_tokens"] is None
    assert refused["cost_usd"] is None


def test_the_prompt_is_logged_only_when_enabled(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings(), access_log={"include_prompt": True})
    with access_lines() as lines:
        r = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=10)
        line = line_of(lines, r.headers["x-request-id"])
    assert line["prompt"] == CHAT["messages"]


def test_access_log_off_writes_nothing(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings(), access_log={"enabled": False})
    assert gw.deps.ledger.access_log is None
    with access_lines() as lines, httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        # The request is closed (counted) where its line would have been written.
        counted = 'gateway_requests_by_outcome_total{lane="default",reason="ok"'
        wait_until(lambda: counted in client.get("/metrics").text, "the request counted")
    assert lines == []


def test_lines_go_out_bare_on_their_own_handler(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    handlers = [h for h in logger.handlers if isinstance(h, LineHandler)]
    assert len(handlers) <= 1  # a reload reuses it
    handler = LineHandler("stderr")
    record = logger.makeRecord(ACCESS_LOGGER, logging.INFO, "", 0, '{"a":1}', None, None)
    handler.emit(record)
    assert capsys.readouterr().err == '{"a":1}\n'


@pytest.mark.parametrize(
    ("routing", "shown"),
    [({}, False), ({"explain_header": True}, True), ({"explain": True}, True)],
)
def test_explain_header_is_honoured_only_when_allowed(
    sim_fleet: Callable[..., SimFleetHandle],
    gateway: Callable[..., GatewayHandle],
    routing: dict[str, bool],
    shown: bool,
) -> None:
    fleet = sim_fleet(2)
    gw = gateway(fleet.backend_settings(), routing=routing)
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json=CHAT,
        headers={"x-gateway-explain": "1"},
        timeout=10,
    )
    assert r.status_code == 200
    assert ("x-gateway-route" in r.headers) is shown
    if shown:
        assert "sim-0" in r.headers["x-gateway-route"]
        assert "sim-1" in r.headers["x-gateway-route"]


async def test_lines_are_held_and_written_together(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("tests.access.held")  # its own logger: nothing else attached
    log = AccessLog(AccessLogSettings(stream="stderr", flush_interval_s=5.0), logger=logger)
    try:
        log.write({"n": 1})
        log.write({"n": 2})
        assert capsys.readouterr().err == ""  # held until the interval or a flush
        log.flush()
        assert capsys.readouterr().err == '{"n":1}\n{"n":2}\n'
        log.write({"n": 3})
        log.write({"big": "x" * FLUSH_BYTES})  # enough waiting: written at once, in order
        out = capsys.readouterr().err.splitlines()
        assert [json.loads(line).get("n") for line in out] == [3, None]
        log.flush()
        assert capsys.readouterr().err == ""
    finally:
        logger.handlers.clear()


def test_an_interval_of_zero_writes_each_line_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("tests.access.unheld")
    log = AccessLog(AccessLogSettings(stream="stderr", flush_interval_s=0), logger=logger)
    try:
        log.write({"n": 1})
        assert capsys.readouterr().err == '{"n":1}\n'
    finally:
        logger.handlers.clear()
