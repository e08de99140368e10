"""The dashboard and alert rules: promtool accepts the rules and their unit tests pass, the
alerts the issue asks for exist, and every metric a query names is one the gateway exposes."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.deploy.files import OBSERVABILITY, read_yaml, tool
from tests.support.harness import GatewayHandle, SimFleetHandle

RULES = OBSERVABILITY / "rules.yaml"
RULES_TEST = OBSERVABILITY / "rules_test.yaml"
METRIC = re.compile(r"\b(gateway_[a-z0-9_]+)\b")
# Sample names each metric type exposes besides (or instead of) its family name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "unknown": ("",),
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = tool("promtool", "Debian's prometheus package: apt-get install prometheus")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def _rule_expressions() -> Iterator[str]:
    for group in read_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def _dashboard_expressions() -> Iterator[str]:
    dashboard = json.loads((OBSERVABILITY / "dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]


def _exposed(text: str) -> set[str]:
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + suffix for suffix in SUFFIXES[kind])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_promtool_accepts_the_rules() -> None:
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {sum(1 for _ in _rule_expressions())} rules found" in done.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    done = _promtool("test", "rules", str(RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_alerts_and_panels_asked_for_exist() -> None:
    alerts = {r["alert"] for g in read_yaml(RULES)["groups"] for r in g["rules"]}
    assert {
        "GatewayIndexDegraded",
        "GatewayBackendUnhealthy",
        "GatewayCircuitOpen",
        "GatewayCacheHitRateCollapse",
        "GatewayAdmissionQueueSaturated",
        "GatewayCachePredictionErrorHigh",
    } <= alerts
    tested = {
        test["alertname"]
        for case in read_yaml(RULES_TEST)["tests"]
        for test in case["alert_rule_test"]
        if test["exp_alerts"]
    }
    assert tested == alerts - {
        "GatewayDown",
        "GatewayErrorRateHigh",
        "GatewayNoHealthyBackend",
        "GatewayTimeToFirstByteHigh",
        "GatewayRoutingDecisionSlow",
        "GatewayUnexpectedErrors",
        "GatewayStreamsBreaking",
    }
    expressions = " ".join(_dashboard_expressions())
    for metric in (
        "gateway_requests_by_outcome_total",
        "gateway_request_ttft_seconds_bucket",
        "gateway_cached_tokens_predicted_total",
        'kind="cache_read"',
        'kind="cache_write"',
        "gateway_cost_usd_total",
        "gateway_backend_in_flight",
        "gateway_upstream_attempts_total",
        "gateway_index_degraded",
        "gateway_admission_queue_depth",
    ):
        assert metric in expressions, metric


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: A\n        expr: sum(rate(gateway_requests_total[5m]) > \n"
    )
    assert _promtool("check", "rules", str(broken)).returncode != 0


def test_dashboard_and_rules_name_only_exposed_metrics(
    sim_fleet: Callable[..., SimFleetHandle],
    gateway: Callable[..., GatewayHandle],
    redis_url: str,
    unique_prefix: str,
) -> None:
    fleet = sim_fleet(2)
    gw = gateway(
        fleet.backend_settings(),
        index={"kind": "redis", "redis_url": redis_url, "key_prefix": unique_prefix},
    )
    body: dict[str, Any] = {
        "model": fleet.backends[0].config.model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
        "stream": True,
    }
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        exposed = _exposed(client.get("/metrics").text)
    expressions = [*_rule_expressions(), *_dashboard_expressions()]
    assert len(expressions) > 10
    for expr in expressions:
        named = set(METRIC.findall(expr))
        assert named or "up{" in expr, f"names no gateway metric: {expr}"
        missing = named - exposed
        assert not missing, f"{expr} names metrics the gateway does not expose: {missing}"


def test_the_metric_check_catches_a_made_up_name() -> None:
    exposed = _exposed("# TYPE gateway_requests_total counter\ngateway_requests_total 1\n")
    assert "gateway_requests_total" in exposed
    assert "gateway_requests_made_up_total" not in exposed
