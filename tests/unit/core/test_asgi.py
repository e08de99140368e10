"""Raw ASGI helpers: bounded body reading, request ids, error responses."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from gateway.api.asgi import ClientGone, header_value, read_body, request_id_for, send_error
from gateway.errors import GatewayError


def scope(headers: Iterable[tuple[bytes, bytes]] = ()) -> dict[str, Any]:
    return {"type": "http", "headers": list(headers)}


class Receiver:
    """An ASGI receive callable replaying messages and counting calls."""

    def __init__(self, messages: Iterable[dict[str, Any]]) -> None:
        self.messages = list(messages)
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return self.messages.pop(0)


def body_messages(*chunks: bytes) -> list[dict[str, Any]]:
    last = len(chunks) - 1
    return [
        {"type": "http.request", "body": chunk, "more_body": i < last}
        for i, chunk in enumerate(chunks)
    ]


async def test_reads_a_single_chunk() -> None:
    receive = Receiver(body_messages(b'{"a":1}'))
    assert await read_body(scope(), receive, 100) == b'{"a":1}'


async def test_joins_streamed_chunks() -> None:
    receive = Receiver(body_messages(b"ab", b"", b"cd", b"e"))
    assert await read_body(scope(), receive, 100) == b"abcde"
    assert receive.calls == 4


async def test_empty_body() -> None:
    receive = Receiver([{"type": "http.request"}])
    assert await read_body(scope(), receive, 100) == b""


async def test_body_exactly_at_the_limit_is_accepted() -> None:
    receive = Receiver(body_messages(b"x" * 6, b"y" * 4))
    headers = [(b"content-length", b"10")]
    assert await read_body(scope(headers), receive, 10) == b"x" * 6 + b"y" * 4


async def test_declared_length_over_the_limit_is_refused_without_reading() -> None:
    receive = Receiver(body_messages(b"x"))
    with pytest.raises(GatewayError) as info:
        await read_body(scope([(b"content-length", b"11")]), receive, 10)
    assert info.value.status == 413
    assert info.value.code == "request_too_large"
    assert receive.calls == 0


async def test_streamed_body_over_the_limit_is_refused_as_soon_as_it_exceeds() -> None:
    receive = Receiver(body_messages(b"x" * 6, b"y" * 5, b"z" * 100))
    with pytest.raises(GatewayError) as info:
        await read_body(scope(), receive, 10)
    assert info.value.status == 413
    assert receive.calls == 2


async def test_understated_content_length_does_not_bypass_the_limit() -> None:
    receive = Receiver(body_messages(b"x" * 8, b"y" * 8))
    with pytest.raises(GatewayError) as info:
        await read_body(scope([(b"content-length", b"4")]), receive, 10)
    assert info.value.status == 413


async def test_garbage_content_length_is_ignored() -> None:
    receive = Receiver(body_messages(b"abc"))
    assert await read_body(scope([(b"content-length", b"lots")]), receive, 10) == b"abc"


async def test_disconnect_before_any_body() -> None:
    receive = Receiver([{"type": "http.disconnect"}])
    with pytest.raises(ClientGone):
        await read_body(scope(), receive, 10)


async def test_disconnect_in_the_middle_of_the_body() -> None:
    receive = Receiver([*body_messages(b"ab", b"cd")[:1], {"type": "http.disconnect"}])
    with pytest.raises(ClientGone):
        await read_body(scope(), receive, 10)


def test_header_value_returns_the_first_match() -> None:
    s = scope([(b"a", b"1"), (b"x-request-id", b"first"), (b"x-request-id", b"second")])
    assert header_value(s, b"x-request-id") == b"first"
    assert header_value(s, b"missing") is None


@pytest.mark.parametrize(
    "given",
    [b"abc-123", b"req_1.2:3/4+5=6", b"A" * 128, b"0"],
)
def test_sane_client_request_id_is_kept(given: bytes) -> None:
    assert request_id_for(scope([(b"x-request-id", given)])) == given


@pytest.mark.parametrize(
    "given",
    [b"", b"has space", b"A" * 129, b"semi;colon", b"new\nline", b'quote"', "\u00e9".encode()],
)
def test_insane_client_request_id_is_replaced(given: bytes) -> None:
    rid = request_id_for(scope([(b"x-request-id", given)]))
    assert rid != given
    assert len(rid) == 24
    assert all(c in b"0123456789abcdef" for c in rid)


def test_missing_request_id_gets_fresh_random_ones() -> None:
    first = request_id_for(scope())
    second = request_id_for(scope())
    assert len(first) == 24
    assert first != second


async def test_send_error_writes_status_headers_and_body() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    error = GatewayError(429, "slow down", retry_after_s=3)
    await send_error(send, error, [(b"x-request-id", b"r1")])
    start, body = sent
    assert start["type"] == "http.response.start"
    assert start["status"] == 429
    headers = dict(start["headers"])
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert headers[b"retry-after"] == b"3"
    assert headers[b"x-request-id"] == b"r1"
    assert orjson.loads(body["body"])["error"]["message"] == "slow down"
    assert body["more_body"] is False


# The exception boundary: a surprise anywhere becomes an OpenAI-shaped 500, a log line, a metric.


def boundary_app() -> Any:
    from gateway.app import GatewayApp
    from gateway.deps import build_deps
    from gateway.settings import settings_from_mapping

    backend = {"id": "b0", "url": "http://127.0.0.1:9", "models": ["m"]}
    return GatewayApp(build_deps(settings_from_mapping({"backends": [backend]})))


def http_scope(
    method: str, path: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers),
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
        "root_path": "",
    }


class Sent:
    """An ASGI send callable keeping every message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def error(self) -> dict[str, Any]:
        body = b"".join(m.get("body", b"") for m in self.messages[1:])
        return dict(orjson.loads(body)["error"])


async def test_an_unexpected_error_on_an_inference_route_is_an_openai_500(caplog) -> None:
    app = boundary_app()

    async def broken(*_: Any) -> Any:
        raise RuntimeError("surprise")

    app.deps.placer.place = broken
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    sent = Sent()
    scope = http_scope("POST", "/v1/chat/completions", [(b"x-request-id", b"req-42")])
    await app(scope, Receiver(body_messages(body)), sent)
    assert sent.status == 500
    assert sent.error["type"] == "server_error"
    assert set(sent.error) == {"message", "type", "param", "code"}
    assert "req-42" in caplog.text
    assert "surprise" in caplog.text
    payload, _ = app.deps.metrics.exposition()
    assert b'gateway_unexpected_errors_total{route="chat"} 1.0' in payload


async def test_an_unexpected_error_on_an_ops_route_is_an_openai_500(caplog) -> None:
    app = boundary_app()

    def broken() -> Any:
        raise RuntimeError("ops surprise")

    app.deps.fleet.models = broken
    sent = Sent()
    await app(http_scope("GET", "/v1/models"), Receiver([{"type": "http.request"}]), sent)
    assert sent.status == 500
    assert sent.error["type"] == "server_error"
    assert "ops surprise" in caplog.text
    payload, _ = app.deps.metrics.exposition()
    assert b'gateway_unexpected_errors_total{route="ops"} 1.0' in payload


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_on_inference_routes_are_405_with_allow(method: str) -> None:
    sent = Sent()
    await boundary_app()(http_scope(method, "/v1/completions"), Receiver([]), sent)
    assert sent.status == 405
    assert (b"allow", b"POST") in sent.messages[0]["headers"]
    assert sent.error["type"] == "invalid_request_error"


# The hardened HTTP protocol, fed chunk by chunk on a fake transport.


class FakeTransport:
    """Enough of an asyncio transport for the protocol: records writes and closes."""

    def __init__(self) -> None:
        self.out = b""
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class TinyApp:
    """Answers 200 `ok`; carries the limits the protocol reads."""

    def __init__(self, max_header_bytes: int) -> None:
        from gateway.server.limits import ClientLimits

        self.client_limits = ClientLimits(max_header_bytes=max_header_bytes, max_url_bytes=1024)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class SlowBodyApp(TinyApp):
    """Starts the response, then sends the body only once `go` is set."""

    def __init__(self) -> None:
        super().__init__(4096)
        self.go = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await self.go.wait()
        await send({"type": "http.response.body", "body": b"ok"})


async def serve_on_fake(app: Any, *chunks: bytes) -> FakeTransport:
    import uvicorn
    from uvicorn.server import ServerState

    from gateway.server.protocol import GatewayHttpProtocol

    config = uvicorn.Config(app, proxy_headers=False, log_level="error")
    config.load()
    protocol = GatewayHttpProtocol(config, ServerState(), {})
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        protocol.data_received(chunk)
    for _ in range(10):  # let the app's task run
        await asyncio.sleep(0)
    if isinstance(app, SlowBodyApp):
        app.go.set()
        for _ in range(10):
            await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


async def feed(*chunks: bytes, max_header_bytes: int = 4096) -> bytes:
    return (await serve_on_fake(TinyApp(max_header_bytes), *chunks)).out


async def test_the_head_goes_out_with_the_first_body_bytes() -> None:
    transport = await serve_on_fake(TinyApp(4096), LINE + b"\r\n")
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
    assert transport.writes[0].endswith(b"\r\n\r\n2\r\nok\r\n0\r\n\r\n")  # head, chunk, end


async def test_a_head_whose_body_waits_goes_out_by_itself_first() -> None:
    transport = await serve_on_fake(SlowBodyApp(), LINE + b"\r\n")
    assert len(transport.writes) == 2
    assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
    assert transport.writes[0].endswith(b"\r\n\r\n")
    assert transport.writes[1] == b"2\r\nok\r\n0\r\n\r\n"


BIG = b"x-big: " + b"a" * 10000 + b"\r\n"
LINE = b"GET /healthz HTTP/1.1\r\n"


@pytest.mark.parametrize(
    "chunks",
    [
        [LINE + BIG + b"\r\n"],  # all at once
        [LINE, BIG, b"\r\n"],  # the cap passed while the head is incomplete
        [LINE + BIG[:-3], BIG[-3:] + b"\r\n"],  # completed by a small last chunk
        [LINE + BIG[:5000], BIG[5000:] + b"\r\n"],
    ],
)
async def test_a_head_over_the_cap_is_431_however_it_is_cut(chunks: list[bytes]) -> None:
    out = await feed(*chunks)
    assert out.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("cut", [1, 10, 30])
async def test_a_small_head_in_pieces_is_served(cut: int) -> None:
    head = LINE + b"x-small: 1\r\n\r\n"
    out = await feed(head[:cut], head[cut:])
    assert out.startswith(b"HTTP/1.1 200 ")


async def test_a_long_url_is_414() -> None:
    out = await feed(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 414 ")
