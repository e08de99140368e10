"""The client side against a real gateway process: deadlines, size caps, 405, OpenAI shapes."""

from __future__ import annotations

import socket

import httpx
import orjson
import pytest

from tests.support.gateway_process import GatewayProcess
from tests.support.harness import MODEL, start_sim_fleet

SERVER = {
    "header_timeout_s": 0.5,
    "body_timeout_s": 0.5,
    "keepalive_timeout_s": 0.5,
    "max_header_bytes": 8192,
    "max_url_bytes": 1024,
    "max_json_depth": 32,
    "max_messages": 64,
}
# Bound on any single socket read; a gateway that never answers fails the test here.
READ_BOUND_S = 15.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    fleet = start_sim_fleet(1)
    process = GatewayProcess(
        tmp_path_factory.mktemp("client"), fleet.backend_settings(), server=SERVER
    )
    process.start()
    yield process
    process.stop()
    fleet.server.stop()


def exchange(port: int, *chunks: bytes) -> bytes:
    """Send `chunks` on a new connection and read until the gateway closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_BOUND_S) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        received = b""
        for _ in range(10_000):
            data = sock.recv(65536)
            if not data:
                return received
            received += data
    raise AssertionError("the gateway kept sending")


def parse(raw: bytes) -> tuple[int, dict[bytes, bytes], dict[str, object]]:
    """Status, headers and the OpenAI error object of one raw response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return status, headers, error


def test_a_partial_head_is_answered_408_and_closed(gw):
    raw = exchange(gw.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
    status, headers, error = parse(raw)
    assert status == 408
    assert headers[b"connection"] == b"close"
    assert error["code"] == "request_timeout"


def test_a_body_shorter_than_its_content_length_is_answered_408(gw):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
    status, _, error = parse(exchange(gw.port, head, b'{"model": "'))
    assert status == 408
    assert "body" in str(error["message"])


def test_an_idle_connection_is_closed(gw):
    assert exchange(gw.port) == b""


def test_an_idle_keep_alive_connection_is_closed_after_a_request(gw):
    raw = exchange(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200")
    assert raw.endswith(b'{"status":"ok"}')


def test_a_large_header_is_431(gw):
    big = b"x-big: " + b"a" * 65536 + b"\r\n"
    status, _, error = parse(exchange(gw.port, b"GET /healthz HTTP/1.1\r\n", big, b"\r\n"))
    assert status == 431
    assert "8192" in str(error["message"])


def test_an_unterminated_header_is_cut_off_early(gw):
    """8 MiB of one header value, never terminated: 431 once the cap is passed, input dropped."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=READ_BOUND_S) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nx-big: ")
        for _ in range(128):
            try:
                sock.sendall(b"a" * 65536)
            except OSError:  # the gateway stopped listening to us
                break
        received = b""
        for _ in range(1000):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
    status, _, error = parse(received)
    assert status == 431
    assert error["code"] == "request_header_fields_too_large"
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_a_long_url_is_414(gw):
    status, _, error = parse(exchange(gw.port, b"GET /" + b"a" * 4096 + b" HTTP/1.1\r\n\r\n"))
    assert status == 414
    assert error["code"] == "uri_too_long"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_get_on_an_inference_route_is_405_with_allow(gw, path):
    r = httpx.get(gw.url + path)
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_a_parse_error_is_openai_shaped(gw):
    status, headers, error = parse(exchange(gw.port, b"BLAH / HTTP/1.1\r\n\r\n"))
    assert status == 400
    assert headers[b"content-type"] == b"application/json"
    assert error["code"] == "invalid_http_request"


def nested(depth: int) -> str:
    """JSON text of `depth` nested arrays (built as text: serializers stop far earlier)."""
    return "[" * depth + '"x"' + "]" * depth


# A whole document `total` levels deep, the deep part in `tools` or in a content part.
@pytest.mark.parametrize("total", [33, 990, 1023])
@pytest.mark.parametrize("where", ["tools", "content_part"])
def test_deep_json_is_400_naming_the_limit(gw, total, where):
    if where == "tools":
        body = '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "tools": %s}'
        text = body % (MODEL, nested(total - 1))
    else:
        part = '{"type": "text", "text": "hi", "extra": ' + nested(total - 5) + "}"
        body = '{"model": "%s", "messages": [{"role": "user", "content": [%s]}]}'
        text = body % (MODEL, part)
    r = httpx.post(gw.url + "/v1/chat/completions", content=text.encode())
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "json_too_deep"
    assert "32 levels" in r.json()["error"]["message"]


def test_too_many_messages_is_400_naming_the_limit(gw):
    messages = [{"role": "user", "content": "hi"}] * 65
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": MODEL, "messages": messages})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
    assert "64" in r.json()["error"]["message"]


def test_the_gateway_still_serves(gw):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(gw.url + "/v1/chat/completions", json=chat).status_code == 200
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'gateway_client_refusals_total{reason="request_timeout"}' in metrics
