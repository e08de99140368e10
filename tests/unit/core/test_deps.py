"""Sizing the prefix index by what each backend's cache holds, in its calibrated units."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.deps import Deps, build_deps, cache_capacities, rebuild_deps
from gateway.fleet.registry import Backend, Fleet
from gateway.settings import HashingSettings, settings_from_mapping
from tests.unit.core.factories import make_backend

HASHING = HashingSettings(block_bytes=256)


def learn_ratio(backend: Backend, model: str, bytes_per_token: float) -> None:
    """Enough prompts for the backend to learn the engine's bytes per token."""
    least = backend.calibration.defaults.min_samples
    for _ in range(least):
        backend.calibration.observe_prompt(model, int(bytes_per_token * 1000), 1000)
    assert backend.calibration.bytes_per_token(model) == pytest.approx(bytes_per_token)


def test_capacities_at_the_configured_values() -> None:
    backend = make_backend("b0", kv_cache_tokens=64_000)
    # 64k tokens at 4 bytes each, in blocks of 256 bytes.
    assert cache_capacities(Fleet([backend]), HASHING) == {"b0": 1000}


def test_capacities_use_the_backend_configured_ratio() -> None:
    backend = make_backend("b0", kv_cache_tokens=64_000, bytes_per_token=3.0)
    assert cache_capacities(Fleet([backend]), HASHING) == {"b0": 750}


def test_capacities_use_the_learned_bytes_per_token() -> None:
    backend = make_backend("b0", kv_cache_tokens=64_000)
    learn_ratio(backend, "m", 4.4)
    assert cache_capacities(Fleet([backend]), HASHING) == {"b0": int(64_000 * 4.4 / 256)}


def test_capacities_use_the_engine_kv_tokens() -> None:
    backend = make_backend("b0", kv_cache_tokens=1_000_000)
    other = make_backend("b1", kv_cache_tokens=64_000)
    assert backend.calibration.learn_engine_cache(32768, 16)
    learn_ratio(backend, "m", 5.0)
    capacities = cache_capacities(Fleet([backend, other]), HASHING)
    assert capacities == {"b0": int(32768 * 5.0 / 256), "b1": 1000}


def test_capacities_take_the_largest_ratio_of_the_models_served() -> None:
    backend = make_backend("b0", kv_cache_tokens=64_000, models=["a", "b"])
    learn_ratio(backend, "b", 6.0)
    assert cache_capacities(Fleet([backend]), HASHING) == {"b0": 1500}


def test_capacity_is_at_least_one_block() -> None:
    backend = make_backend("b0", kv_cache_tokens=1)
    assert cache_capacities(Fleet([backend]), HASHING) == {"b0": 1}


class RecordingIndex:
    """Stands in for the index: records every reconfiguration."""

    def __init__(self) -> None:
        self.configured: list[dict[str, int]] = []

    def configure_backends(self, capacities: dict[str, int]) -> None:
        self.configured.append(dict(capacities))


def deps_with(**backend: Any) -> tuple[Deps, RecordingIndex]:
    entry = {"id": "b0", "url": "http://b0.test:8000", "models": ["m"], **backend}
    settings = settings_from_mapping({"backends": [entry], "hashing": {"block_bytes": 256}})
    deps = build_deps(settings)
    index = RecordingIndex()
    deps.index = index  # type: ignore[assignment]
    return deps, index


def test_resize_index_forced_configures_once() -> None:
    deps, index = deps_with(kv_cache_tokens=64_000)
    deps.resize_index(force=True)
    assert index.configured == [{"b0": 1000}]
    deps.resize_index()
    assert index.configured == [{"b0": 1000}]  # nothing moved


def test_resize_index_only_on_more_than_five_percent() -> None:
    deps, index = deps_with(kv_cache_tokens=100_000)
    deps.resize_index(force=True)
    assert index.configured == [{"b0": 1562}]
    calibration = deps.fleet.backends[0].calibration
    calibration.learn_engine_cache(104_000, None)  # +4%: not worth rebuilding for
    deps.resize_index()
    assert len(index.configured) == 1
    calibration.learn_engine_cache(107_000, None)  # +7% from what the index was sized at
    deps.resize_index()
    assert index.configured[-1] == {"b0": int(107_000 * 4.0 / 256)}
    assert len(index.configured) == 2
    calibration.learn_engine_cache(95_000, None)  # -11%: shrinks too
    deps.resize_index()
    assert index.configured[-1] == {"b0": int(95_000 * 4.0 / 256)}
    assert len(index.configured) == 3


def test_resize_index_compares_with_the_last_applied_size() -> None:
    deps, index = deps_with(kv_cache_tokens=100_000)
    deps.resize_index(force=True)
    calibration = deps.fleet.backends[0].calibration
    # Small steps, each under the tolerance, add up past it.
    for tokens in (103_000, 106_000):
        calibration.learn_engine_cache(tokens, None)
        deps.resize_index()
    assert index.configured[-1] == {"b0": int(106_000 * 4.0 / 256)}
    assert len(index.configured) == 2


def test_resize_index_follows_a_learned_ratio() -> None:
    deps, index = deps_with(kv_cache_tokens=64_000)
    deps.resize_index(force=True)
    learn_ratio(deps.fleet.backends[0], "m", 4.4)  # +10% of bytes per token
    deps.resize_index()
    assert index.configured == [{"b0": 1000}, {"b0": int(64_000 * 4.4 / 256)}]


def test_the_load_exchange_rides_only_on_a_redis_index_and_can_be_turned_off() -> None:
    entry = {"id": "b0", "url": "http://b0.test:8000", "models": ["m"]}
    redis = {"kind": "redis", "redis_url": "redis://127.0.0.1:1/0"}  # never connected here
    sections: list[tuple[dict[str, Any], bool]] = [
        ({}, False),
        (redis, True),
        ({**redis, "load_exchange_ms": 0}, False),
    ]
    for index, expected in sections:
        settings = settings_from_mapping({"backends": [entry], "index": index})
        deps = build_deps(settings)
        assert (deps.exchange is not None) is expected
        if deps.exchange is not None:
            assert deps.exchange.fleet is deps.fleet
            # A reload keeps the exchange (it rides on the index) and hands it the new fleet.
            reloaded = rebuild_deps(deps, settings, deps.fleet.backends)
            assert reloaded.exchange is deps.exchange
            assert deps.exchange.fleet is reloaded.fleet
