"""SSE relaying: splitting at event boundaries and rewriting engine error events."""

from __future__ import annotations

import orjson
import pytest

from gateway.fleet.adapters.engines import adapter_for
from gateway.proxy.sse import DONE_EVENT, rewrite_error_events, split_complete

VLLM = adapter_for("vllm")
TGI = adapter_for("tgi")

CHUNK = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'


# --- split_complete ----------------------------------------------------------------------------


def test_split_keeps_the_unfinished_tail() -> None:
    complete, rest = split_complete(b"data: a\n\ndata: b\n\ndata: c")
    assert complete == b"data: a\n\ndata: b\n\n"
    assert rest == b"data: c"


def test_split_without_a_blank_line_returns_everything_as_rest() -> None:
    assert split_complete(b"data: a\n") == (b"", b"data: a\n")
    assert split_complete(b"") == (b"", b"")


def test_split_at_an_exact_boundary_leaves_nothing() -> None:
    assert split_complete(b"data: a\n\n") == (b"data: a\n\n", b"")


def test_split_reassembles_any_chunking() -> None:
    stream = CHUNK * 3 + DONE_EVENT
    for cut in range(1, len(stream)):
        out, pending = b"", b""
        for piece in (stream[:cut], stream[cut:]):
            block, pending = split_complete(pending + piece)
            out += block
        assert out + pending == stream
        assert pending == b""
        assert out.endswith(b"\n\n")


def test_split_understands_crlf_event_boundaries() -> None:
    complete, rest = split_complete(b"data: a\r\n\r\ndata: b")
    assert complete == b"data: a\r\n\r\n"
    assert rest == b"data: b"


# --- rewrite_error_events ----------------------------------------------------------------------


def error_payload(block: bytes, index: int = 0) -> dict[str, object]:
    events = [e for e in block.split(b"\n\n") if e]
    event = events[index]
    assert event.startswith(b"data: ")
    body: dict[str, object] = orjson.loads(event[len(b"data: ") :])
    return body


def test_vllm_error_event_is_rewritten_to_openai_shape() -> None:
    engine = {"error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}}
    block = CHUNK + b"data: " + orjson.dumps(engine) + b"\n\n" + DONE_EVENT
    out, found = rewrite_error_events(block, VLLM)
    assert found is True
    assert out.startswith(CHUNK)
    assert out.endswith(DONE_EVENT)
    assert error_payload(out, 1) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    }


def test_tgi_flat_error_without_space_after_data() -> None:
    block = b'data:{"error":"Request failed during generation","error_type":"generation"}\n\n'
    out, found = rewrite_error_events(block, TGI)
    assert found is True
    assert error_payload(out) == {
        "error": {
            "message": "Request failed during generation",
            "type": "server_error",
            "param": None,
            "code": "generation",
        }
    }


def test_tgi_keep_alive_comments_are_untouched() -> None:
    err = b'data: {"error":{"message":"m","http_status_code":422}}\n\n'
    block = b":\n\n" + err + b":\n\n"
    out, found = rewrite_error_events(block, TGI)
    assert found is True
    events = out.split(b"\n\n")
    assert events[0] == b":"
    assert events[2] == b":"
    assert orjson.loads(events[1][6:])["error"]["message"] == "m"


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"choices":[{"delta":{"content":"error"}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":"the \\"error\\" key"}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":"{\\"error\\": 1}"}}]}\n\n',
        b'data: {"choices":[{"delta":{"tool_calls":[{"function":{"name":"error"}}]}}]}\n\n',
        b'data:{"choices":[{"delta":{"content":"error"}}]}\n\n',
        b"data: [DONE]\n\n",
        b':"error"\n\n',
        b'event: x\ndata: "error"\n\n',
        b'data: not json but "error" here\n\n',
    ],
)
def test_content_that_mentions_error_is_untouched(event: bytes) -> None:
    out, found = rewrite_error_events(event, VLLM)
    assert found is False
    assert out == event


def test_block_without_errors_round_trips_exactly() -> None:
    block = b":\n\n" + CHUNK + CHUNK + DONE_EVENT
    assert rewrite_error_events(block, TGI) == (block, False)


def test_error_event_with_extra_fields_still_counts() -> None:
    block = b'data: {"id":"x","object":"error","error":{"message":"m","code":500}}\n\n'
    out, found = rewrite_error_events(block, VLLM)
    assert found is True
    assert error_payload(out)["error"] == {
        "message": "m",
        "type": "server_error",
        "param": None,
        "code": None,
    }
