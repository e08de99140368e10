"""https:// backends over loopback: a CA and certificate this test makes, SNI, keep-alive."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.proxy.upstream import UpstreamUnavailable
from tests.integration.upstream.backends import good
from tests.integration.upstream.certs import SERVER_NAME, Certs, have_openssl, make_certs
from tests.integration.upstream.gateway import backend, loop_gateway, sse_events

pytestmark = pytest.mark.skipif(not have_openssl(), reason="needs the openssl command")

T = 5.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


async def get(client, url: str) -> tuple[int, bytes]:
    response = await client.send("GET", url, None, [], timeout_s=T)
    try:
        return response.status, await response.read()
    finally:
        await response.aclose()


async def test_ca_file_and_server_name_verify_the_backend(raw_server, h1, certs):
    server = await raw_server(tls=certs.server_context())
    client = h1()
    client.configure_tls(server.url, ca_file=certs.ca, server_name=SERVER_NAME)
    for i in range(3):
        expected = f"ok GET /n/{i} HTTP/1.1 ".encode()
        assert await get(client, f"{server.url}/n/{i}") == (200, expected)
    assert server.connections == 1  # kept alive over TLS
    assert server.requests[0].header(b"host") == f"127.0.0.1:{server.port}".encode()


async def test_the_url_host_is_checked_when_no_server_name_is_given(raw_server, h1, certs):
    server = await raw_server(tls=certs.server_context())
    client = h1()
    client.configure_tls(server.url, ca_file=certs.ca)  # the certificate names 127.0.0.1 too
    assert (await get(client, server.url))[0] == 200


async def test_an_unknown_ca_is_refused(raw_server, h1, certs):
    server = await raw_server(tls=certs.server_context())
    with pytest.raises(UpstreamUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await get(h1(), server.url)  # the system trust store does not know the test CA


async def test_a_certificate_for_another_name_is_refused(raw_server, h1, certs):
    server = await raw_server(tls=certs.server_context())
    client = h1()
    client.configure_tls(server.url, ca_file=certs.ca, server_name="other.test")
    with pytest.raises(UpstreamUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await get(client, server.url)


async def test_plain_http_to_a_tls_port_fails_cleanly(raw_server, h1, certs):
    server = await raw_server(tls=certs.server_context())
    with pytest.raises(UpstreamUnavailable):
        await h1().send("GET", server.url.replace("https", "http"), None, [], timeout_s=1.0)


def test_an_unreadable_ca_file_is_a_configuration_error(h1, tmp_path: Path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match="CA file"):
        h1().configure_tls("https://127.0.0.1:1", ca_file=missing)
    with pytest.raises(ValueError, match="https://"):
        h1().configure_tls("http://127.0.0.1:1")


async def test_the_gateway_serves_an_https_backend(raw_server, certs):
    server = await raw_server(good, tls=certs.server_context())
    entry = backend(server, "tls", tls_ca_file=str(certs.ca), tls_server_name=SERVER_NAME)
    async with loop_gateway([entry]) as gw:
        whole = await gw.chat()
        stream = await gw.chat(stream=True)
    assert whole.status_code == 200
    assert whole.json()["choices"][0]["message"]["content"] == "ok"
    assert sse_events(stream.content)[-1] == "[DONE]"
    assert server.connections == 1


async def test_the_gateway_refuses_an_unverified_https_backend(raw_server, certs):
    server = await raw_server(good, tls=certs.server_context())
    async with loop_gateway([backend(server, "tls")], upstream={"max_attempts": 1}) as gw:
        r = await gw.chat()
    assert r.status_code == 502
    assert "CERTIFICATE_VERIFY_FAILED" in r.json()["error"]["message"]
