"""Per-engine formatting of chunks, bodies, errors, models and metrics."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.sim.config import FlavorName, SimBackendConfig
from gateway.sim.engine import SimEngine
from gateway.sim.flavors import Flavor, ResponseMeta, Usage, make_flavor
from gateway.sim.request import ContextLengthError, ErrorKind, RequestKind

CHAT = ResponseMeta("chat", "rid", 1750000000, "m")
CMPL = ResponseMeta("completion", "rid", 1750000000, "m")


def flavor(name: FlavorName, **kw: Any) -> Flavor:
    return make_flavor(SimBackendConfig(flavor=name, model="m", **kw))


def events(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith((b"data: ", b"data:"))
        out.append(orjson.loads(block.removeprefix(b"data:").strip()))
    return out


def stream(f: Flavor, meta: ResponseMeta, pieces: list[str], finish: str = "length") -> list[Any]:
    tpl = f.stream_template(meta, finish, b"data: ")
    raw = tpl.first or b""
    for i, piece in enumerate(pieces):
        raw += tpl.token_event(orjson.dumps(piece), i == len(pieces) - 1)
    return events(raw)


def test_vllm_chat_chunks() -> None:
    chunks = stream(flavor("vllm"), CHAT, ["Hi", " there"])
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {"content": " there"},
    ]
    assert all(c["id"] == "rid" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert "usage" not in chunks[0]
    assert "stop_reason" not in chunks[1]["choices"][0]
    assert chunks[2]["choices"][0]["finish_reason"] == "length"
    assert chunks[2]["choices"][0]["stop_reason"] is None


def test_vllm_completion_chunks_carry_no_usage_key() -> None:
    chunks = stream(flavor("vllm"), CMPL, ["a", " b"], finish="stop")
    assert [c["choices"][0]["text"] for c in chunks] == ["a", " b"]
    assert all("usage" not in c and c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[0]["choices"][0]["token_ids"] is None  # vLLM 0.32 keys, set to null


def test_sglang_chunks_have_matched_stop_and_null_usage() -> None:
    chunks = stream(flavor("sglang"), CHAT, ["Hi"], finish="stop")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["choices"][0]["delta"]["content"] == ""
    assert chunks[1]["choices"][0]["delta"]["content"] == "Hi"
    assert chunks[1]["choices"][0]["matched_stop"] == 128009
    assert all(c["usage"] is None for c in chunks)


def test_tgi_chunks_repeat_role_and_have_empty_id() -> None:
    chunks = stream(flavor("tgi"), CHAT, ["Hi", " you"])
    assert len(chunks) == 2  # no role-only chunk
    for c in chunks:
        assert c["id"] == ""
        assert c["usage"] is None
        assert c["system_fingerprint"] == "3.3.4-native"
        assert c["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[1]["choices"][0]["finish_reason"] == "length"


def test_template_escapes_pieces_and_uses_given_prefix() -> None:
    tpl = flavor("tgi").stream_template(CHAT, "stop", b"data:")
    raw = tpl.token_event(orjson.dumps('quote " and \n newline'), True)
    assert raw.startswith(b'data:{"object"')
    assert events(raw)[0]["choices"][0]["delta"]["content"] == 'quote " and \n newline'


@pytest.mark.parametrize(
    ("name", "cached", "expected"),
    [
        ("vllm", 0, {"cached_tokens": 0, "created_cache_tokens": 32}),
        ("vllm", 32, {"cached_tokens": 32, "created_cache_tokens": 0}),
        ("sglang", 0, {"cached_tokens": 0}),
        ("sglang", 32, {"cached_tokens": 32}),
        ("tgi", 32, "absent"),
    ],
)
def test_usage_chunk_cached_tokens(name: FlavorName, cached: int, expected: Any) -> None:
    chunk = flavor(name).usage_chunk(CHAT, Usage(40, 5, cached))
    assert chunk["choices"] == []
    usage = chunk["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        40,
        5,
        45,
    )
    assert usage.get("prompt_tokens_details", "absent") == expected


def test_cached_tokens_not_reported_when_disabled() -> None:
    vllm = flavor("vllm", report_cached_tokens=False)
    assert "prompt_tokens_details" not in vllm.usage_chunk(CHAT, Usage(40, 5, 32))["usage"]
    sglang = flavor("sglang", report_cached_tokens=False)
    assert sglang.usage_chunk(CHAT, Usage(40, 5, 32))["usage"]["prompt_tokens_details"] is None


@pytest.mark.parametrize("name", ["vllm", "sglang", "tgi"])
@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_whole_response_objects(name: FlavorName, kind: RequestKind) -> None:
    meta = ResponseMeta(kind, "rid", 1, "m")
    body = flavor(name).response(meta, "hello world", "length", Usage(10, 2, 0))
    assert body["object"] == ("chat.completion" if kind == "chat" else "text_completion")
    choice = body["choices"][0]
    text = choice["message"]["content"] if kind == "chat" else choice["text"]
    assert text == "hello world"
    assert choice["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == 12


def test_vllm_error_is_nested_with_integer_code() -> None:
    reply = flavor("vllm").error(ErrorKind.INVALID_VALUE, "bad", 1)
    assert reply.status == 400
    assert orjson.loads(reply.body) == {
        "error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}
    }
    assert reply.headers == ()


def test_vllm_overloaded_has_retry_after() -> None:
    reply = flavor("vllm").error(ErrorKind.OVERLOADED, "busy", 3)
    assert reply.status == 429
    assert dict(reply.headers)[b"retry-after"] == b"3"
    assert flavor("vllm").error(ErrorKind.OVERLOADED, "busy", 0).headers == ()


def test_sglang_error_is_flat() -> None:
    reply = flavor("sglang").error(ErrorKind.NOT_FOUND, "nope", 1)
    assert reply.status == 404
    body = orjson.loads(reply.body)
    assert body == {
        "object": "error",
        "message": "nope",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        (ErrorKind.INVALID_VALUE, 422, "validation"),
        (ErrorKind.CONTEXT_LENGTH, 422, "validation"),
        (ErrorKind.OVERLOADED, 429, "overloaded"),
        (ErrorKind.SERVER_ERROR, 424, "generation"),
        (ErrorKind.UNAVAILABLE, 503, "healthcheck"),
    ],
)
def test_tgi_error_statuses(kind: ErrorKind, status: int, error_type: str) -> None:
    reply = flavor("tgi").error(kind, "msg", 5)
    assert reply.status == status
    body = orjson.loads(reply.body)
    assert set(body) == {"error", "error_type"}
    assert body["error_type"] == error_type
    assert reply.headers == ()  # TGI sends no Retry-After


def test_tgi_extractor_rejections_are_plain_text() -> None:
    bad_json = flavor("tgi").error(ErrorKind.INVALID_JSON, "JSON decode error: x", 1)
    assert (bad_json.status, bad_json.content_type.split(b";")[0]) == (400, b"text/plain")
    assert bad_json.body == b"Failed to parse the request body as JSON: x"
    missing = flavor("tgi").error(ErrorKind.SCHEMA, "messages: Field required", 1)
    assert missing.status == 422
    assert missing.body.startswith(b"Failed to deserialize the JSON body")


def test_stream_error_events() -> None:
    vllm = flavor("vllm").stream_error("boom")
    assert vllm["error"]["code"] == 500
    assert vllm["error"]["message"] == "boom"
    assert flavor("sglang").stream_error("boom")["error"]["object"] == "error"
    assert flavor("tgi").stream_error("boom") == {
        "error": {"message": "boom", "http_status_code": 424}
    }


def test_context_length_messages() -> None:
    err = ContextLengthError(4231, 16, 4096)
    assert "maximum context length is 4096 tokens" in flavor("vllm").context_message(err)
    assert "4096" in flavor("sglang").context_message(err)
    assert "must be <= 4096" in flavor("tgi").context_message(err)


def test_models_bodies() -> None:
    vllm = flavor("vllm", max_model_len=4096).models()["data"][0]
    assert (vllm["owned_by"], vllm["max_model_len"], vllm["root"]) == ("vllm", 4096, "m")
    assert vllm["parent"] is None
    assert vllm["permission"]
    assert flavor("sglang").models()["data"][0]["owned_by"] == "sglang"
    tgi = flavor("tgi").models()["data"][0]
    assert (tgi["created"], tgi["owned_by"]) == (0, "m")


@pytest.mark.parametrize(
    ("name", "names"),
    [
        (
            "vllm",
            [
                'vllm:num_requests_running{engine="0",model_name="m"}',
                "vllm:num_requests_waiting{",
                "vllm:kv_cache_usage_perc{",
                "vllm:prefix_cache_queries_total{",
                "vllm:prefix_cache_hits_total{",
                "vllm:prompt_tokens_total{",
                "vllm:generation_tokens_total{",
                "vllm:request_success_total{",
            ],
        ),
        (
            "sglang",
            [
                "sglang:num_running_reqs{",
                "sglang:num_queue_reqs{",
                "sglang:token_usage{",
                "sglang:cache_hit_rate{",
                "sglang:num_used_tokens{",
            ],
        ),
        (
            "tgi",
            [
                "tgi_queue_size ",
                "tgi_batch_current_size ",
                "tgi_request_count ",
                "tgi_request_success ",
            ],
        ),
    ],
)
def test_metrics_use_engine_names(name: FlavorName, names: list[str]) -> None:
    f = flavor(name)
    text = f.metrics(SimEngine(f.config)).decode()
    for metric in names:
        assert metric in text
    assert text.endswith("\n")


def test_flavor_extras() -> None:
    sglang = flavor("sglang")
    load = sglang.extra_get("/get_load", SimEngine(sglang.config))
    assert isinstance(load, list)
    assert load[0]["num_waiting_reqs"] == 0
    tgi = flavor("tgi", max_model_len=4096)
    info = tgi.extra_get("/info", SimEngine(tgi.config))
    assert isinstance(info, dict)
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (4095, 4096)
    assert flavor("vllm").extra_get("/info", SimEngine(SimBackendConfig())) is None
