"""Every kustomize overlay renders offline and validates against the Kubernetes schemas."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.files import (
    DEPLOY,
    OBSERVABILITY,
    OPERATOR_KINDS,
    OVERLAYS,
    one,
    read_yaml,
    render,
)

K8S_VERSION = "1.30"
# What each overlay must contain beyond the gateway's own objects.
EXTRA = {
    "default": {("StatefulSet", "redis"), ("Service", "redis")},
    "external-redis": set(),
    "dns-discovery": {("StatefulSet", "redis"), ("Service", "vllm")},
}
GATEWAY_OBJECTS = {
    ("Deployment", "gateway"),
    ("Service", "gateway"),
    ("HorizontalPodAutoscaler", "gateway"),
    ("PodDisruptionBudget", "gateway"),
    ("NetworkPolicy", "gateway"),
    ("ServiceMonitor", "gateway"),
    ("PrometheusRule", "gateway"),
}


def test_the_overlays_are_the_ones_checked() -> None:
    assert set(OVERLAYS) == set(EXTRA)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay: str) -> None:
    docs = render(overlay)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert GATEWAY_OBJECTS | EXTRA[overlay] <= kinds
    assert any(kind == "ConfigMap" and name.startswith("gateway-config-") for kind, name in kinds)
    if overlay == "external-redis":
        assert ("StatefulSet", "redis") not in kinds
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        # strict: unknown fields are errors too.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_catches_a_broken_manifest() -> None:
    deployment = one(render("default"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {
        "name": "http"
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_find_the_gateway_pods(overlay: str) -> None:
    docs = render(overlay)
    deployment = one(docs, "Deployment", "gateway")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(one(docs, "Service", "gateway")["spec"]["selector"], pod_labels)
    assert _selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], pod_labels)
    for spread in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert _selects(spread["labelSelector"]["matchLabels"], pod_labels)
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    # The Service's labels are what the ServiceMonitor selects.
    service_labels = one(docs, "Service", "gateway")["metadata"]["labels"]
    monitor = one(docs, "ServiceMonitor")
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service_labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_operator_resources_have_the_crd_shape(overlay: str) -> None:
    """kubernetes-validate has no schema for the Prometheus Operator's CRDs: their shape here."""
    docs = render(overlay)
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    ports = {p["name"] for p in one(docs, "Service", "gateway")["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for item in group["rules"]:
            assert set(item) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert ("alert" in item) != ("record" in item)
            assert isinstance(item["expr"], str)


def test_prometheus_rule_carries_the_rules_file() -> None:
    rule = read_yaml(DEPLOY / "base" / "prometheusrule.yaml")
    assert rule["spec"] == read_yaml(OBSERVABILITY / "rules.yaml")
