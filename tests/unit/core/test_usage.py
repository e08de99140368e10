"""Usage the backend reported: parsed from a chunk or body, found (and stripped) in SSE blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.proxy.usage import Usage, UsageReader, parse_usage


def chunk(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


USAGE_CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {
        "prompt_tokens": 300,
        "completion_tokens": 7,
        "total_tokens": 307,
        "prompt_tokens_details": {"cached_tokens": 256},
    },
}
CONTENT_CHUNK = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}


def test_usage_chunk_is_parsed() -> None:
    assert parse_usage(orjson.dumps(USAGE_CHUNK)) == Usage(300, 7, 256)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 2}, Usage(10, 2, None)),
        ({"prompt_tokens": 10, "prompt_tokens_details": None}, Usage(10, None, None)),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": None}},
         Usage(10, None, None)),
        ({"prompt_tokens": "10", "completion_tokens": True}, Usage(None, None, None)),
        ({"prompt_tokens": -1, "prompt_tokens_details": {"cached_tokens": 0}},
         Usage(None, None, 0)),
    ],
)  # fmt: skip
def test_missing_or_odd_fields_are_none(usage: dict[str, Any], expected: Usage) -> None:
    assert parse_usage(orjson.dumps({"usage": usage})) == expected


def test_absent_cached_tokens_mean_zero_only_for_a_reporting_backend() -> None:
    body = orjson.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 2}})
    assert parse_usage(body, absent_means_zero=True) == Usage(10, 2, 0)
    assert parse_usage(body, absent_means_zero=False) == Usage(10, 2, None)


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b'{"usage": null}', b"{}"])
def test_no_usage(payload: bytes) -> None:
    assert parse_usage(payload) is None


def read(blocks: list[bytes], strip: bool) -> tuple[bytes, bytes | None]:
    """Feed blocks through a reader as the forwarder does; what the client got, and the usage."""
    reader = UsageReader(strip)
    sent = b"".join(reader.feed(block) for block in blocks) + reader.flush()
    return sent, reader.usage


def test_block_without_usage_object_is_untouched() -> None:
    block = chunk(CONTENT_CHUNK) * 3
    reader = UsageReader(strip=True)
    assert reader.feed(block) == block
    assert reader.usage is None


def test_usage_event_is_found_and_kept_when_the_client_asked() -> None:
    block = chunk(CONTENT_CHUNK) + chunk(USAGE_CHUNK) + b"data: [DONE]\n\n"
    sent, payload = read([block], strip=False)
    assert sent == block
    assert payload is not None
    assert parse_usage(payload) == Usage(300, 7, 256)


def test_usage_event_is_stripped_when_the_gateway_asked() -> None:
    block = chunk(CONTENT_CHUNK) + chunk(USAGE_CHUNK) + b"data: [DONE]\n\n"
    sent, payload = read([block], strip=True)
    assert sent == chunk(CONTENT_CHUNK) + b"data: [DONE]\n\n"
    assert payload is not None
    assert parse_usage(payload) == Usage(300, 7, 256)


def test_crlf_framing_is_kept() -> None:
    usage = b"data: " + orjson.dumps(USAGE_CHUNK) + b"\r\n\r\n"
    block = b"data: x\r\n\r\n" + usage + b"data: [DONE]\r\n\r\n"
    sent, payload = read([block], strip=True)
    assert sent == b"data: x\r\n\r\ndata: [DONE]\r\n\r\n"
    assert payload is not None


def test_usage_riding_on_a_content_chunk_is_read_but_never_stripped() -> None:
    # vLLM's continuous_usage_stats (the client's own choice) puts usage on content chunks.
    riding = {**CONTENT_CHUNK, "usage": USAGE_CHUNK["usage"]}
    block = chunk(riding)
    sent, payload = read([block], strip=True)
    assert sent == block
    assert payload is not None
    assert parse_usage(payload) == Usage(300, 7, 256)


def test_content_that_mentions_usage_is_not_a_usage_event() -> None:
    text = {"choices": [{"delta": {"content": 'say "usage": {"prompt_tokens": 1}'}}]}
    block = chunk(text)
    assert read([block], strip=True) == (block, None)


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vllm"


def _chunks_without_ids(stream: bytes) -> list[dict[str, Any]]:
    events = [e for e in stream.split(b"\n\n") if e.startswith(b"data: {")]
    parsed = [orjson.loads(e[6:]) for e in events]
    for item in parsed:
        item.pop("id", None)
        item.pop("created", None)
    return parsed


def test_a_stripped_real_vllm_stream_is_the_one_vllm_sends_without_usage() -> None:
    # Asked for usage, vLLM moves system_fingerprint from the final chunk to the usage chunk;
    # the client that did not ask must get it on the final chunk, where vLLM puts it then.
    asked = (FIXTURES / "chat_stream_usage.sse").read_bytes()
    plain = (FIXTURES / "chat_stream_no_usage.sse").read_bytes()
    events = [e + b"\n\n" for e in asked.split(b"\n\n") if e]
    sent, payload = read(events, strip=True)  # one event per block: the worst case
    assert payload is not None
    assert b'"usage":{' not in sent
    assert sent.endswith(b"data: [DONE]\n\n")
    assert _chunks_without_ids(sent) == _chunks_without_ids(plain)


def test_held_final_chunk_goes_out_at_the_end_when_no_usage_came() -> None:
    final = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    blocks = [chunk(CONTENT_CHUNK), chunk(final), b"data: [DONE]\n\n"]
    assert read(blocks, strip=True) == (b"".join(blocks), None)
    assert read(blocks[:2], strip=True) == (b"".join(blocks[:2]), None)
