"""A raw-socket HTTP fuzzer: malformed lines, headers, chunk sizes, smuggling; no 5xx, no hang."""

from __future__ import annotations

import contextlib
import socket

import httptools
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway_process import GatewayProcess
from tests.support.harness import MODEL, start_sim_fleet

# Bound on one exchange; the gateway's own deadlines (0.3 s here) end every one far sooner.
READ_BOUND_S = 15.0
BODY = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}' % MODEL.encode()
CL = b"Content-Length: %d\r\n" % len(BODY)
POST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"

CASES = {
    "no target": b"GET\r\n\r\n",
    "bad version": b"GET / HTTP/9.9\r\n\r\n",
    "binary line": b"\x00\x01\x02\xff\r\n\r\n",
    "double space": b"GET  /healthz HTTP/1.1\r\n\r\n",
    "bad method byte": b"G\xffT /healthz HTTP/1.1\r\n\r\n",
    "lf only": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "no colon": b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
    "space before colon": b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
    "obs fold": b"GET /healthz HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
    "nul in value": b"GET /healthz HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    "many headers": b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 2000 + b"\r\n",
    "cl and te": POST + CL + CHUNKED + b"\r\n" + BODY,
    "duplicate cl": POST + CL + b"Content-Length: 3\r\n\r\n" + BODY,
    "same cl twice": POST + CL + CL + b"\r\n" + BODY,
    "cl with sign": POST + b"Content-Length: +%d\r\n\r\n" % len(BODY) + BODY,
    "cl not a number": POST + b"Content-Length: ten\r\n\r\n" + BODY,
    "cl negative": POST + b"Content-Length: -1\r\n\r\n",
    "cl huge": POST + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "te unknown": POST + b"Transfer-Encoding: xchunked\r\n\r\n" + BODY,
    "te chunked twice": POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te identity then chunked": POST
    + b"Transfer-Encoding: identity\r\n"
    + CHUNKED
    + b"\r\n0\r\n\r\n",
    "chunk size junk": POST + CHUNKED + b"\r\nzz\r\n" + BODY + b"\r\n0\r\n\r\n",
    "chunk size huge": POST + CHUNKED + b"\r\nffffffffffffffffffff\r\nab\r\n0\r\n\r\n",
    "chunk size negative": POST + CHUNKED + b"\r\n-5\r\nabcde\r\n0\r\n\r\n",
    "chunk missing crlf": POST + CHUNKED + b"\r\n5\r\nabcdeXX0\r\n\r\n",
    "chunk extension": POST + CHUNKED + b"\r\n%x;ext=1\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
    "chunk trailer": POST + CHUNKED + b"\r\n%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nX-T: 1\r\n\r\n",
    "smuggled second": POST + CL + b"\r\n" + BODY + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "pipelined then junk": b"GET /healthz HTTP/1.1\r\n\r\n" + b"\x16\x03\x01\x00\xa5\x01",
    "tls hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
    "http2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "upgrade": b"GET /healthz HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "absolute uri": b"GET http://evil/healthz HTTP/1.1\r\n\r\n",
    "connect": b"CONNECT evil:443 HTTP/1.1\r\n\r\n",
    "http 1.0 chunked": b"POST /v1/completions HTTP/1.0\r\n" + CHUNKED + b"\r\n0\r\n\r\n",
    "expect continue": POST + CL + b"Expect: 100-continue\r\n\r\n" + BODY,
    "partial": POST + b"Content-Le",
    "short body": POST + b"Content-Length: 500\r\n\r\n{",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    fleet = start_sim_fleet(1)
    server = {"header_timeout_s": 0.3, "body_timeout_s": 0.3, "keepalive_timeout_s": 0.3}
    process = GatewayProcess(
        tmp_path_factory.mktemp("rawfuzz"), fleet.backend_settings(), server=server
    )
    process.start()
    yield process
    process.stop()
    fleet.server.stop()


class Responses:
    """Parser callbacks collecting every response on one connection."""

    def __init__(self) -> None:
        self.done: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self._headers: dict[bytes, bytes] = {}
        self._body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._headers, self._body = {}, b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self._headers, self._body))


def exchange(port: int, payload: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Send `payload`, read until the gateway closes the connection (bounded), parse answers."""
    responses = Responses()
    with socket.create_connection(("127.0.0.1", port), timeout=READ_BOUND_S) as sock:
        # Closed on us mid-send: what was answered is still read below.
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        for _ in range(10_000):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            responses.parser.feed_data(data)
        else:
            raise AssertionError("the gateway never closed the connection")
    return responses.done


def check(responses: list[tuple[int, dict[bytes, bytes], bytes]]) -> None:
    for status, headers, body in responses:
        assert status < 500, body
        if status >= 400:
            assert headers[b"content-type"] == b"application/json"
            error = orjson.loads(body)["error"]
            assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("payload", CASES.values(), ids=CASES.keys())
def test_malformed_requests_never_5xx_nor_hang(gw, payload):
    check(exchange(gw.port, payload))


def test_smuggling_attempts_are_refused(gw):
    for name in ("cl and te", "duplicate cl", "cl with sign", "te unknown"):
        statuses = [status for status, _, _ in exchange(gw.port, CASES[name])]
        assert statuses == [400], name


TEMPLATES = [
    POST + CL + b"\r\n" + BODY,
    POST + CHUNKED + b"\r\n%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request with a few bytes replaced, inserted or cut."""
    data = bytearray(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "cut"]))
        chunk = draw(
            st.binary(min_size=1, max_size=6)
            | st.sampled_from([b"\r\n", b"\n", b":", b" ", b"\x00", b"0", b"-", b"ffff", b";"])
        )
        if action == "replace":
            data[at : at + len(chunk)] = chunk
        elif action == "insert":
            data[at:at] = chunk
        else:
            del data[at : at + len(chunk)]
    return bytes(data)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutated())
def test_mutated_requests_never_5xx_nor_hang(gw, payload):
    check(exchange(gw.port, payload))


def test_serves_after_fuzzing(gw):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(gw.url + "/v1/chat/completions", json=chat).status_code == 200
