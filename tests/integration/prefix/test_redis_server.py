"""The test-support RedisServer: its own process, same port on restart, pause/resume."""

from __future__ import annotations

import socket

import pytest

from tests.support.redis_server import RedisServer


def answers(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_lifecycle_on_one_port() -> None:
    with RedisServer() as server:
        port, pid = server.port, server.pid
        assert server.url == f"redis://127.0.0.1:{port}/0"
        assert server.running
        assert answers(port)
        server.pause()
        assert not answers(port, timeout_s=0.2)
        server.resume()
        assert answers(port)
        server.stop()
        assert not server.running
        assert not answers(port)
        server.start()
        assert server.port == port
        assert server.pid != pid
        assert answers(port)
        server.pause()  # stopping a paused server must not hang
    assert not server.running


def test_missing_executable_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="not on PATH"):
        RedisServer(executable="no-such-redis-server-binary")
