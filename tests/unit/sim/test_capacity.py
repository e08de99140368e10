"""Engine-reported KV capacity and start time, in each engine's own format."""

from __future__ import annotations

import re

import pytest

from gateway.sim.config import SimBackendConfig
from gateway.sim.engine import SimEngine
from gateway.sim.flavors import make_flavor
from gateway.sim.flavors.base import go_float
from gateway.sim.flavors.sglang import SglangFlavor
from gateway.sim.flavors.tgi import TgiFlavor

CONFIG = SimBackendConfig(model="m", cache_capacity_blocks=5000, block_size=16)


def labels_of(text: str, name: str) -> dict[str, str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(name + "{"))
    assert line.endswith("} 1.0")
    return dict(re.findall(r'(\w+)="([^"]*)"', line))


def test_vllm_cache_config_info_has_vllms_labels_as_strings() -> None:
    config = SimBackendConfig(model="m", cache_capacity_blocks=5000, block_size=32)
    text = make_flavor(config).metrics(SimEngine(config)).decode()
    assert "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig" in text
    assert "# TYPE vllm:cache_config_info gauge" in text
    labels = labels_of(text, "vllm:cache_config_info")
    assert labels["block_size"] == "32"
    assert labels["num_gpu_blocks"] == "5000"
    assert labels["enable_prefix_caching"] == "True"
    assert labels["cache_dtype"] == "auto"
    assert labels["gpu_memory_utilization"] == "0.92"
    assert labels["kv_cache_size_tokens"] == str(5000 * 32)
    assert labels["engine"] == "0"
    assert labels["sliding_window"] == "None"
    assert "model_name" not in labels  # the info gauge has no model label
    assert list(labels) == sorted(labels)  # the multiprocess collector sorts label names
    assert int(labels["num_gpu_blocks"]) * int(labels["block_size"]) == 5000 * 32


@pytest.mark.parametrize("name", ["vllm", "sglang"])
def test_process_start_time_is_the_standard_gauge(name: str) -> None:
    config = SimBackendConfig(flavor=name, model="m")  # type: ignore[arg-type]
    engine = SimEngine(config)
    text = make_flavor(config).metrics(engine).decode()
    assert "# TYPE process_start_time_seconds gauge" in text
    match = re.search(r"^process_start_time_seconds (\S+)$", text, re.MULTILINE)
    assert match is not None
    assert match.group(1) == go_float(engine.started_at)
    assert re.fullmatch(r"\d\.\d+e\+09", match.group(1))  # as prometheus_client writes it
    assert float(match.group(1)) == pytest.approx(engine.started_at)
    before = engine.started_at
    engine.reset_cache(restart=True)
    after = make_flavor(config).metrics(engine).decode()
    assert f"process_start_time_seconds {go_float(before)}" not in after
    assert engine.started_at > before


def test_tgi_exposes_no_start_time_metric() -> None:
    config = SimBackendConfig(flavor="tgi", model="m")
    assert b"process_start_time_seconds" not in make_flavor(config).metrics(SimEngine(config))


def test_sglang_server_info_reports_the_token_pool() -> None:
    config = SimBackendConfig(flavor="sglang", model="m", cache_capacity_blocks=5000)
    flavor = SglangFlavor(config)
    engine = SimEngine(config)
    info = flavor.extra_get("/get_server_info", engine)
    assert info == flavor.extra_get("/server_info", engine)
    assert isinstance(info, dict)
    assert info["max_total_num_tokens"] == 5000 * 16
    assert info["status"] == "ready"
    assert info["model_path"] == "m"
    assert info["context_length"] == 32768
    assert info["max_req_input_len"] == 32767
    assert info["chunked_prefill_size"] == 2048
    assert info["max_running_requests"] == 256
    assert info["max_total_tokens"] is None  # the flag, unset; the pool size is above
    assert info["internal_states"][0]["memory_usage"]["token_capacity"] == 5000 * 16
    assert isinstance(info["version"], str)


def test_tgi_3_info_has_no_batch_limits() -> None:
    info = TgiFlavor(SimBackendConfig(flavor="tgi", model="m")).info()
    assert info["version"] == "3.3.4"
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (32767, 32768)
    assert "max_batch_total_tokens" not in info
    assert info["router"] == "text-generation-router"


def test_tgi_2_info_reports_max_batch_total_tokens() -> None:
    config = SimBackendConfig(
        flavor="tgi", model="m", cache_capacity_blocks=8943, tgi_version="2.4.1"
    )
    flavor = TgiFlavor(config)
    info = flavor.info()
    assert info["max_batch_total_tokens"] == 8943 * 16
    assert info["model_id"] == "m"
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (32767, 32768)
    assert info["max_concurrent_requests"] == 128
    assert (info["version"], flavor.fingerprint) == ("2.4.1", "2.4.1-native")
    for key in ("model_dtype", "waiting_served_ratio", "max_waiting_tokens", "max_batch_size"):
        assert key in info


def test_sample_values_are_written_like_prometheus_client() -> None:
    assert [go_float(v) for v in (3, 0.5, 1234567, 1712345678.12)] == [
        "3.0", "0.5", "1.234567e+06", "1.71234567812e+09",
    ]  # fmt: skip
