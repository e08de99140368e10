"""The soak benchmark's judgement of a streamed answer and its metric parsing."""

from __future__ import annotations

import orjson

from bench.engines_fleet import total
from bench.soak import by_label
from bench.soak_clients import classify


def _event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _chunk(content: str = "", finish: str | None = None) -> bytes:
    delta = {"content": content} if content else {}
    return _event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


DONE = b"data: [DONE]\n\n"


def test_a_complete_stream_is_ok() -> None:
    body = _chunk("Hel") + _chunk("lo") + _chunk(finish="stop") + DONE
    assert classify(200, body) == ("ok", "")


def test_an_error_before_any_token_is_a_failure_before_the_first_byte() -> None:
    body = _event({"error": {"message": "upstream failed", "type": "upstream_error"}}) + DONE
    assert classify(200, body)[0] == "error_before_content"


def test_an_error_after_tokens_is_a_midstream_error() -> None:
    body = _chunk("Hel") + _event({"error": {"message": "backend broke"}}) + DONE
    assert classify(200, body)[0] == "midstream_error"


def test_a_stream_without_done_or_finish_is_truncated() -> None:
    assert classify(200, _chunk("Hel") + _chunk("lo"))[0] == "truncated"
    assert classify(200, _chunk("Hel") + DONE)[0] == "truncated"
    assert classify(200, _chunk("Hel") + b'data: {"choi')[0] == "truncated"


def test_an_error_status_names_the_status() -> None:
    outcome, detail = classify(503, b'{"error": {"message": "no backend"}}')
    assert outcome == "status_503"
    assert "no backend" in detail


def test_metric_sums_by_name_and_label() -> None:
    text = "\n".join(
        [
            "# TYPE gateway_upstream_attempts counter",
            'gateway_upstream_attempts_total{backend="a",outcome="ok"} 5.0',
            'gateway_upstream_attempts_total{backend="b",outcome="ok"} 2.0',
            'gateway_upstream_attempts_total{backend="b",outcome="status_500"} 1.0',
            "# TYPE gateway_upstream_attempts_other counter",
            'gateway_upstream_attempts_other_total{backend="b",outcome="ok"} 100.0',
            "",
        ]
    )
    assert total(text, "gateway_upstream_attempts_total") == 8.0
    assert total(text, "gateway_upstream_attempts_total", backend="b") == 3.0
    assert by_label(text, "gateway_upstream_attempts_total", "outcome") == {
        "ok": 7.0,
        "status_500": 1.0,
    }
