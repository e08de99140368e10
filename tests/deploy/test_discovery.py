"""DNS discovery: settings, following a name's answers, and a running gateway that follows them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import GatewayApp
from gateway.deps import build_deps
from gateway.fleet.discovery import DnsDiscovery, system_resolver
from gateway.fleet.dns_settings import DiscoverySettings, DnsGroupSettings
from gateway.server.runtime import Runtime
from gateway.settings import ConfigError, settings_from_mapping
from tests.deploy.loopback import MODEL, PodFleet, start_pod_fleet
from tests.support.gateway_process import GatewayProcess
from tests.support.serving import ServerThread

TEMPLATE = {"engine": "vllm", "models": [MODEL]}


class FakeDns:
    """A resolver whose answers the test sets per name; an exception is raised instead."""

    def __init__(self) -> None:
        self.answers: dict[str, Sequence[str] | Exception] = {}
        self.calls: list[tuple[str, int, int]] = []

    async def __call__(self, host: str, port: int, family: int) -> Sequence[str]:
        self.calls.append((host, port, family))
        answer = self.answers[host]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


def group(**extra: Any) -> dict[str, Any]:
    return {"dns": "vllm.models.svc:8000", "id_prefix": "vllm", "backend": TEMPLATE, **extra}


def discovery(*groups: dict[str, Any], **extra: Any) -> DiscoverySettings:
    return DiscoverySettings.model_validate({"groups": list(groups), **extra})


def gateway_config(**discovery_section: Any) -> dict[str, Any]:
    return {"backends": [], "discovery": discovery_section}


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    return str(info.value)


# Settings


def test_discovery_alone_is_a_valid_fleet() -> None:
    settings = settings_from_mapping(gateway_config(groups=[group()]))
    assert settings.backends == []
    assert settings.discovery.groups[0].host == "vllm.models.svc"
    assert settings.discovery.groups[0].port == 8000


def test_no_backends_and_no_group_is_rejected_naming_backends() -> None:
    assert "\n  backends: Value error, at least one backend" in config_error({"backends": []})


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (group(backend={"engine": "vllm"}), "backend.models: Field required"),
        (group(backend={**TEMPLATE, "engine": "ollama"}), "backend.engine: Input should be"),
        (group(backend={**TEMPLATE, "url": "http://x:1"}), "backend.url comes from the"),
        (group(backend={**TEMPLATE, "id": "x"}), "backend.id comes from the"),
        (group(dns="vllm.models.svc"), "discovery.groups.0.dns: String should match"),
        (group(dns="vllm.models.svc:70000"), "port 70000 is out of range"),
        (group(id_prefix="has space"), "discovery.groups.0.id_prefix"),
    ],
)
def test_bad_groups_are_rejected_naming_the_field(entry: dict[str, Any], expected: str) -> None:
    message = config_error(gateway_config(groups=[entry]))
    assert "discovery.groups.0" in message
    assert expected in message, message


def test_two_groups_with_one_prefix_are_rejected() -> None:
    message = config_error(gateway_config(groups=[group(), group(dns="other:1")]))
    assert "id_prefix 'vllm' is used by more than one group" in message


def test_a_discovered_backend_is_named_and_addressed_by_its_address() -> None:
    entry = DnsGroupSettings.model_validate(
        group(scheme="https", backend={**TEMPLATE, "pool": "p"})
    )
    v4, v6 = entry.backend_for("10.0.0.7"), entry.backend_for("fd00:0::1")
    assert (v4.id, v4.base_url, v4.pool) == ("vllm-10.0.0.7", "https://10.0.0.7:8000", "p")
    assert (v6.id, v6.base_url) == ("vllm-fd00::1", "https://[fd00::1]:8000")


# Following a name's answers


async def test_refresh_builds_a_backend_per_distinct_address_in_order() -> None:
    dns = FakeDns()
    dns.answers["vllm.models.svc"] = ["10.0.0.9", "10.0.0.10", "10.0.0.9", "fd00::2"]
    found = DnsDiscovery(dns, on_change=_never)
    found.configure(discovery(group(family="ipv4")))
    assert await found.refresh() is True
    ids = [b.id for b in found.backends()]
    assert ids == ["vllm-10.0.0.9", "vllm-10.0.0.10", "vllm-fd00::2"]
    assert dns.calls == [("vllm.models.svc", 8000, socket.AF_INET)]
    assert await found.refresh() is False  # the same answer is no change


async def test_max_backends_caps_a_group() -> None:
    dns = FakeDns()
    dns.answers["vllm.models.svc"] = [f"10.0.0.{i}" for i in range(1, 6)]
    found = DnsDiscovery(dns, on_change=_never)
    found.configure(discovery(group(max_backends=2)))
    await found.refresh()
    assert [b.id for b in found.backends()] == ["vllm-10.0.0.1", "vllm-10.0.0.2"]


async def test_a_failing_name_keeps_its_addresses_until_it_answers_again() -> None:
    dns = FakeDns()
    dns.answers["vllm.models.svc"] = ["10.0.0.1", "10.0.0.2"]
    found = DnsDiscovery(dns, on_change=_never)
    found.configure(discovery(group()))
    await found.refresh()
    dns.answers["vllm.models.svc"] = socket.gaierror(socket.EAI_NONAME, "Name not known")
    assert await found.refresh() is False
    assert len(found.backends()) == 2
    dns.answers["vllm.models.svc"] = ["10.0.0.2"]
    assert await found.refresh() is True
    assert [b.id for b in found.backends()] == ["vllm-10.0.0.2"]


async def test_a_resolver_that_hangs_is_cut_off_and_keeps_the_addresses() -> None:
    hang = asyncio.Event()
    answers = [["10.0.0.1"]]

    async def resolver(host: str, port: int, family: int) -> Sequence[str]:
        if answers:
            return answers.pop()
        await hang.wait()
        return []

    found = DnsDiscovery(resolver, on_change=_never)
    found.configure(discovery(group(), resolve_timeout_s=0.01))
    await found.refresh()
    assert await found.refresh() is False
    assert [b.id for b in found.backends()] == ["vllm-10.0.0.1"]


async def test_static_backends_keep_their_ids_and_come_first() -> None:
    dns = FakeDns()
    dns.answers["vllm.models.svc"] = ["10.0.0.1", "10.0.0.2"]
    static = {"id": "vllm-10.0.0.1", "url": "http://static:1", "models": [MODEL]}
    settings = settings_from_mapping({"backends": [static], "discovery": {"groups": [group()]}})
    found = DnsDiscovery(dns, on_change=_never)
    found.configure(settings.discovery)
    await found.refresh()
    expanded = found.expand(settings)
    assert [(b.id, b.base_url) for b in expanded.backends] == [
        ("vllm-10.0.0.1", "http://static:1"),
        ("vllm-10.0.0.2", "http://10.0.0.2:8000"),
    ]


async def test_the_loop_reports_a_change_it_resolved() -> None:
    dns = FakeDns()
    dns.answers["vllm.models.svc"] = ["10.0.0.1"]
    changed = asyncio.Event()

    async def on_change() -> None:
        changed.set()

    found = DnsDiscovery(dns, on_change)
    found.configure(discovery(group(), interval_s=0.001))
    await found.refresh()
    dns.answers["vllm.models.svc"] = ["10.0.0.1", "10.0.0.3"]
    found.start()
    try:
        await asyncio.wait_for(changed.wait(), 10)
    finally:
        await found.close()
    assert [b.id for b in found.backends()] == ["vllm-10.0.0.1", "vllm-10.0.0.3"]
    assert not found.running


async def test_the_system_resolver_reads_localhost() -> None:
    addresses = await system_resolver("localhost", 80, socket.AF_INET)
    assert "127.0.0.1" in addresses


async def _never() -> None:
    raise AssertionError("no change was expected to be reported")


# A running gateway following the answers


@pytest.fixture
def pods() -> Iterator[PodFleet]:
    fleet = start_pod_fleet(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    yield fleet
    fleet.stop()


def wait_ready(client: httpx.Client, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling for readiness, bounded; no ordering depends on it
    raise AssertionError("the gateway did not become ready")


def chat(client: httpx.Client, text: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    return client.post("/v1/chat/completions", json=body)


def backend_ids(runtime: Runtime) -> set[str]:
    return {backend.id for backend in runtime.deps.fleet.backends}


def test_a_running_gateway_follows_the_names_answers(pods: PodFleet) -> None:
    dns = FakeDns()
    dns.answers["pods.models.test"] = ["127.0.0.2", "127.0.0.3"]
    section = {
        "interval_s": 3600,  # the test drives each round itself
        "groups": [group(dns=f"pods.models.test:{pods.port}", id_prefix="pod")],
    }
    settings = settings_from_mapping(
        {**gateway_config(**section), "health": {"interval_s": 0.2, "load_interval_s": 0.2}}
    )
    runtime = Runtime(build_deps(settings), resolver=dns)
    server = ServerThread([GatewayApp(runtime)], lifespan="on").start()
    try:
        with httpx.Client(base_url=server.urls[0], timeout=10) as client:
            wait_ready(client)
            assert backend_ids(runtime) == {"pod-127.0.0.2", "pod-127.0.0.3"}
            answered = {chat(client, f"q{i}").headers["x-gateway-backend"] for i in range(8)}
            assert answered <= {"pod-127.0.0.2", "pod-127.0.0.3"}
            models = client.get("/v1/models").json()["data"]
            assert [m["id"] for m in models] == [MODEL]

            dns.answers["pods.models.test"] = ["127.0.0.3", "127.0.0.4"]
            assert server.call(runtime.discovery.poll_once()) is True
            assert backend_ids(runtime) == {"pod-127.0.0.3", "pod-127.0.0.4"}
            answered = {chat(client, f"r{i}").headers["x-gateway-backend"] for i in range(8)}
            assert answered <= {"pod-127.0.0.3", "pod-127.0.0.4"}
            metrics = client.get("/metrics").text
            assert 'gateway_backend_healthy{backend="pod-127.0.0.4"} 1.0' in metrics
            assert 'backend="pod-127.0.0.2"} 1.0' not in metrics.split("gateway_backend_healthy")[1]

            dns.answers["pods.models.test"] = OSError("resolver unreachable")
            assert server.call(runtime.discovery.poll_once()) is False
            assert backend_ids(runtime) == {"pod-127.0.0.3", "pod-127.0.0.4"}
            assert chat(client, "still served").status_code == 200
    finally:
        server.stop()


def test_a_reload_keeps_the_discovered_backends(pods: PodFleet, tmp_path: Path) -> None:
    dns = FakeDns()
    dns.answers["pods.models.test"] = ["127.0.0.2"]
    path = tmp_path / "gateway.yaml"
    entry = group(dns=f"pods.models.test:{pods.port}", id_prefix="pod")
    path.write_text(yaml.safe_dump(gateway_config(groups=[entry])), encoding="utf-8")
    settings = settings_from_mapping(gateway_config(groups=[entry]))
    runtime = Runtime(build_deps(settings), config_path=str(path), resolver=dns)
    server = ServerThread([GatewayApp(runtime)], lifespan="on").start()
    try:
        with httpx.Client(base_url=server.urls[0], timeout=10) as client:
            wait_ready(client)
            first = runtime.deps.fleet.backends[0]
            result = server.call(runtime.reload())
            assert result.ok, result.message
            assert backend_ids(runtime) == {"pod-127.0.0.2"}
            assert runtime.deps.fleet.backends[0] is first  # unchanged: calibration kept
            assert chat(client, "after reload").headers["x-gateway-backend"] == "pod-127.0.0.2"
    finally:
        server.stop()


def test_the_serve_command_resolves_localhost_through_the_system(tmp_path: Path) -> None:
    fleet = start_pod_fleet(["127.0.0.1"])
    entry = group(dns=f"localhost:{fleet.port}", id_prefix="pod", family="ipv4")
    gateway = GatewayProcess(tmp_path, [], discovery={"groups": [entry]})
    try:
        gateway.start()
        gateway.wait_for_line("discovery: first resolution: 1 backends")
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            wait_ready(client)
            assert chat(client, "hello").headers["x-gateway-backend"] == "pod-127.0.0.1"
    finally:
        gateway.stop()
        fleet.stop()
