"""docs/metrics.md is the catalog the code builds, and the catalog is what a gateway exposes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics, catalog, catalog_markdown
from tests.support.harness import MODEL, GatewayHandle, SimFleetHandle

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
# Families a live gateway exposes only in some setups: the memory index's entries, one
# created on its first sample.
ONLY_SOMETIMES = {"gateway_index_entries"}


def test_the_committed_page_matches_the_generator() -> None:
    expected = catalog_markdown(GatewayMetrics())
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/metrics.md is stale: run `.venv/bin/python scripts/metrics_doc.py`"
    )


def test_the_catalog_is_what_a_live_gateway_exposes(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        text = client.get("/metrics").text
    exposed = {}
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families}
    for family in families:
        if family.name.endswith("_created") and family.name.removesuffix("_created") in names:
            continue  # the creation time prometheus_client exposes beside each counter
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
        exposed[name] = (family.type, family.documentation, labels)
    documented = {f.name: f for f in catalog(gw.deps.metrics)}
    assert set(exposed) - set(documented) == set(), "exposed but not in the catalog"
    assert set(documented) - set(exposed) - ONLY_SOMETIMES == set(), "cataloged, not exposed"
    for name, (kind, help, labels) in exposed.items():
        family = documented[name]
        assert (family.kind, family.help) == (kind, help), name
        assert labels <= set(family.labels), name
    assert all(f.help for f in documented.values())
