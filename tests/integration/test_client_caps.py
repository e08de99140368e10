"""Connection and request caps on a real gateway process: 503 with Retry-After past them."""

from __future__ import annotations

import socket
import threading

import httpx
import orjson

from tests.support.gateway_process import GatewayProcess
from tests.support.harness import MODEL

READ_BOUND_S = 15.0
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a body of known length."""
    data = b""
    for _ in range(1000):
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(body) >= length:
                return data
    raise AssertionError("no complete response")


def assert_overloaded(raw: bytes, what: str) -> None:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert b"retry-after: 1" in head.lower()
    error = orjson.loads(body)["error"]
    assert error["code"] == "server_overloaded"
    assert what in error["message"]


def test_connections_past_the_cap_get_503_with_retry_after(sim_fleet, tmp_path):
    fleet = sim_fleet(1)
    server = {"max_connections": 3, "keepalive_timeout_s": 60}
    gw = GatewayProcess(tmp_path, fleet.backend_settings(), server=server).start()
    address = ("127.0.0.1", gw.port)
    held = [socket.create_connection(address, timeout=READ_BOUND_S) for _ in range(3)]
    try:
        for sock in held:  # each connection established and kept alive
            sock.sendall(HEALTHZ)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        with socket.create_connection(address, timeout=READ_BOUND_S) as extra:
            # Answered as soon as it is accepted, before it sends anything.
            assert_overloaded(read_response(extra), "connections")
        held.pop().close()
        # One closed: a new connection is served again (the close may take a moment to land).
        for _ in range(50):
            with socket.create_connection(address, timeout=READ_BOUND_S) as again:
                again.sendall(HEALTHZ)
                if read_response(again).startswith(b"HTTP/1.1 200"):
                    break
        else:
            raise AssertionError("never served again")
    finally:
        for sock in held:
            sock.close()
        gw.stop()


def test_requests_past_the_cap_get_503_with_retry_after(sim_fleet, tmp_path):
    fleet = sim_fleet(1, time_scale=1.0, decode_s_per_token=0.02)
    gw = GatewayProcess(
        tmp_path, fleet.backend_settings(), server={"max_concurrent_requests": 2}
    ).start()
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 3000,
        "messages": [{"role": "user", "content": "a long one"}],
    }
    started = [threading.Event(), threading.Event()]
    stop = threading.Event()

    def hold(event: threading.Event) -> None:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=60) as r:
            for _ in r.iter_raw():
                event.set()
                if stop.is_set():
                    return

    threads = [threading.Thread(target=hold, args=(e,)) for e in started]
    try:
        for thread in threads:
            thread.start()
        for event in started:
            assert event.wait(READ_BOUND_S)
        r = httpx.get(gw.url + "/healthz")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "server_overloaded"
        assert "requests" in r.json()["error"]["message"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(READ_BOUND_S)
        gw.stop()
