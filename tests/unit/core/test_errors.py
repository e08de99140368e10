"""GatewayError: OpenAI-shaped body, retry headers, in-band SSE form."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import GatewayError, bad_request, error_type_for


def header_map(error: GatewayError) -> dict[bytes, bytes]:
    headers = error.headers()
    names = [name for name, _ in headers]
    assert len(names) == len(set(names)), "no header may appear twice"
    return dict(headers)


def test_body_has_exactly_the_openai_fields() -> None:
    error = GatewayError(400, "bad thing", param="messages.[0]", code="invalid_value")
    assert orjson.loads(error.body()) == {
        "error": {
            "message": "bad thing",
            "type": "invalid_request_error",
            "param": "messages.[0]",
            "code": "invalid_value",
        }
    }


def test_param_and_code_default_to_null() -> None:
    inner = orjson.loads(GatewayError(500, "boom").body())["error"]
    assert inner["param"] is None
    assert inner["code"] is None
    assert inner["type"] == "server_error"


def test_explicit_type_wins_over_status_default() -> None:
    error = GatewayError(429, "quota", type="insufficient_quota")
    assert orjson.loads(error.body())["error"]["type"] == "insufficient_quota"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "invalid_request_error"),
        (413, "invalid_request_error"),
        (418, "invalid_request_error"),
        (429, "rate_limit_exceeded"),
        (500, "server_error"),
        (502, "server_error"),
        (503, "service_unavailable"),
        (504, "timeout_error"),
    ],
)
def test_error_type_for_status(status: int, expected: str) -> None:
    assert error_type_for(status) == expected
    assert GatewayError(status, "x").type == expected


def test_error_is_an_exception_carrying_its_message() -> None:
    with pytest.raises(GatewayError, match="nope") as info:
        raise GatewayError(404, "nope")
    assert info.value.status == 404


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    ("given", "seconds", "sdk_ms"),
    [(-5, 1, 1000), (0, 1, 1000), (7, 7, 7000), (60, 60, 60000), (61, 61, 60000),
     (3600, 3600, 60000), (86400, 3600, 60000)],
)  # fmt: skip
def test_retry_after_passes_through_and_the_sdk_hint_stays_in_what_sdks_honour(
    status: int, given: int, seconds: int, sdk_ms: int
) -> None:
    headers = header_map(GatewayError(status, "busy", retry_after_s=given))
    assert headers[b"retry-after"] == str(seconds).encode()
    assert headers[b"retry-after-ms"] == str(sdk_ms).encode()
    assert b"x-should-retry" not in headers


def test_no_retry_headers_without_a_retry_hint() -> None:
    headers = header_map(GatewayError(503, "down"))
    assert b"retry-after" not in headers
    assert b"retry-after-ms" not in headers


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_non_retryable_client_errors_say_so(status: int) -> None:
    headers = header_map(GatewayError(status, "no"))
    assert headers[b"x-should-retry"] == b"false"
    assert headers[b"content-type"] == b"application/json"


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses_do_not_forbid_retries(status: int) -> None:
    assert b"x-should-retry" not in header_map(GatewayError(status, "try again"))


def test_sse_event_is_one_data_event_then_done() -> None:
    error = GatewayError(502, "broke off")
    event = error.sse_event()
    assert event.endswith(b"data: [DONE]\n\n")
    events = event.split(b"\n\n")
    assert events[-1] == b""
    assert events[0] == b"data: " + error.body()
    assert events[1] == b"data: [DONE]"
    assert len(events) == 3


def test_bad_request_is_a_400_naming_the_field() -> None:
    error = bad_request("`x` is wrong.", param="x", code="invalid_x")
    assert error.status == 400
    assert error.payload() == {
        "message": "`x` is wrong.",
        "type": "invalid_request_error",
        "param": "x",
        "code": "invalid_x",
    }


def test_message_with_quotes_and_unicode_stays_valid_json() -> None:
    message = 'the "model" \u00e9\u4e2d\n is missing'
    assert orjson.loads(GatewayError(400, message).body())["error"]["message"] == message


def test_the_http_server_writes_its_own_errors_in_openai_shape() -> None:
    from gateway.server.limits import header_too_large, over_capacity
    from gateway.server.protocol import error_response

    raw = error_response(header_too_large(8192))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"\r\nconnection: close" in head
    assert b"\r\ncontent-length: %d" % len(body) in head
    error = orjson.loads(body)["error"]
    assert error["code"] == "request_header_fields_too_large"
    assert set(error) == {"message", "type", "param", "code"}
    busy = error_response(over_capacity("connections"))
    assert busy.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nretry-after: 1\r\n" in busy
