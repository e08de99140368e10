"""The admission examples in config/examples load, and mean what their comments say."""

from __future__ import annotations

from pathlib import Path

from gateway.admission.keys import KeyTable
from gateway.settings import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def test_tiered_tenants_example_maps_its_demo_keys() -> None:
    settings = load_settings(EXAMPLES / "tiered-tenants.yaml")
    table = KeyTable.from_settings(settings.auth, {})
    acme = table.authenticate(b"Bearer acme-demo-key")
    assert (acme.tenant, acme.tier) == ("acme", "interactive")
    assert table.authenticate(b"Bearer nightly-demo-key").tier == "batch"
    assert settings.admission.tiers["batch"].reject_status == 429


def test_lanes_example_splits_short_and_long() -> None:
    settings = load_settings(EXAMPLES / "lanes.yaml")
    assert [lane.name for lane in settings.admission.lanes] == ["short", "long"]
    assert {b.pool for b in settings.backends} == {"short", "long"}


def test_mixed_engines_example_has_three_engines_on_two_accelerators() -> None:
    settings = load_settings(EXAMPLES / "mixed-engines.yaml")
    assert {b.engine for b in settings.backends} == {"vllm", "sglang", "tgi"}
    assert {b.accelerator for b in settings.backends} == {"h100", "l40s"}
