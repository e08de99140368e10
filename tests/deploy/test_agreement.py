"""The Dockerfile, docker-compose.yml and the manifests agree with the code they deploy."""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.cli import build_parser
from gateway.settings import CONFIG_ENV, GatewaySettings, load_settings
from tests.deploy.dockerfile import Instruction, env_of, instructions
from tests.deploy.files import DEPLOY, OVERLAYS, ROOT, one, read_yaml, render
from tests.support.harness import GatewayHandle, SimFleetHandle

DOCKERFILE = instructions(ROOT / "Dockerfile")
COMPOSE = read_yaml(ROOT / "docker-compose.yml")
GATEWAY_SERVICES = ("gateway-1", "gateway-2")


def _last(keyword: str) -> Instruction:
    return [item for item in DOCKERFILE if item.keyword == keyword][-1]


def _image_command(args: list[str] | None = None) -> list[str]:
    """What the image runs: ENTRYPOINT + (args or CMD)."""
    given = args if args is not None else _last("CMD").exec_form()
    return _last("ENTRYPOINT").exec_form() + given


def _parse(command: list[str]) -> Any:
    """The real CLI parser's reading of a container command (SystemExit if it rejects it)."""
    assert command[0] == "prefix-gateway"
    return build_parser().parse_args(command[1:])


def _settings_of(text: str, tmp_path: Path, name: str) -> GatewaySettings:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def _config_path() -> str:
    return env_of(DOCKERFILE)[CONFIG_ENV]


def _grace_needed(settings: GatewaySettings, pre_stop_s: float = 0.0) -> float:
    return pre_stop_s + settings.server.drain_delay_s + settings.server.drain_s


# --- the image -------------------------------------------------------------------------------


def test_image_runs_the_console_script_in_exec_form() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert _last("ENTRYPOINT").exec_form() == ["prefix-gateway"]
    assert "prefix-gateway" in scripts
    args = _parse(_image_command())
    assert args.command == "serve"
    # Exec form, no shell in between: SIGTERM (drain) and SIGHUP (reload) reach the gateway.
    assert _last("STOPSIGNAL").args == "SIGTERM"
    assert not any(part in {"sh", "bash", "/bin/sh", "-c"} for part in _image_command())


def test_image_user_is_not_root() -> None:
    user = _last("USER").args.split(":")[0]
    assert user not in {"0", "root"}
    assert int(user) > 0


def test_image_port_config_path_and_healthcheck(tmp_path: Path) -> None:
    args = _parse(_image_command())
    assert [int(p) for p in _last("EXPOSE").args.split()] == [args.port]
    copies = [item.args.split() for item in DOCKERFILE if item.keyword == "COPY"]
    assert ["config/gateway.yaml", _config_path()] in copies
    healthcheck = " ".join(_last("HEALTHCHECK").exec_form())
    url = re.search(r"http://[^'\"]+", healthcheck)
    assert url is not None
    assert urlsplit(url.group()).path == "/healthz"
    assert urlsplit(url.group()).port == args.port
    # The default config in the image loads (the CLI's --host makes it listen beyond loopback).
    load_settings(ROOT / "config" / "gateway.yaml")
    assert args.host == "0.0.0.0"


def test_image_installs_as_make_install_and_the_readme_do() -> None:
    runs = [i.args for i in DOCKERFILE if i.keyword == "RUN" and "pip install" in i.args]
    assert len(runs) == 1
    words = shlex.split(runs[0])
    pinned = words[words.index("-c") + 1]
    assert pinned == "constraints.txt"
    target = words[-1]
    # The image has every optional feature's extra; dev installs (make install) include them.
    extras = ("otel", "tokenizers")
    assert target == f".[{','.join(extras)}]"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    assert set(optional) - {"dev", "bench"} == set(extras), optional
    makefile = (ROOT / "Makefile").read_text()
    assert f"pip install --quiet --disable-pip-version-check -c {pinned} -e '.[dev]'" in makefile
    readme = (ROOT / "README.md").read_text()
    assert f"pip install -c {pinned} '{target}'" in readme
    # Every runtime dependency is pinned there.
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / pinned).read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    extra_requirements = [r for extra in extras for r in optional[extra]]
    for requirement in [*project["dependencies"], *extra_requirements]:
        name = re.split(r"[\[<>=;! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in {pinned}"
    copied = " ".join(item.args for item in DOCKERFILE if item.keyword == "COPY")
    assert pinned in copied


def test_dockerignore_keeps_what_the_image_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for item in DOCKERFILE:
        if item.keyword == "COPY" and not item.args.startswith("--from"):
            for source in item.args.split()[:-1]:
                assert source.rstrip("/") in kept, f"{source} is excluded by .dockerignore"


# --- Kubernetes ------------------------------------------------------------------------------


def _config_map_text(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> str:
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    name = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
    data: dict[str, str] = one(docs, "ConfigMap", name)["data"]
    assert list(data) == [Path(_config_path()).name]
    return data[Path(_config_path()).name]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_agrees_with_the_code(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    deployment = one(docs, "Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = _parse(_image_command(container["args"]))
    assert args.command == "serve"
    assert args.config == _config_path()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[CONFIG_ENV] == _config_path()
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == str(Path(_config_path()).parent)
    settings = _settings_of(_config_map_text(docs, deployment), tmp_path, "gateway.yaml")
    assert settings.index.kind == "redis"  # replicas share the index
    port = settings.server.port if args.port is None else args.port
    assert settings.server.host == "0.0.0.0"
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"http": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = _grace_needed(settings, float(pre_stop[1]))
    grace = pod["terminationGracePeriodSeconds"]
    assert needed < grace <= needed + 15, (grace, needed)
    assert pod["securityContext"]["runAsUser"] == int(_last("USER").args.split(":")[0])
    service = one(docs, "Service", "gateway")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(port, "http")]
    policy = one(docs, "NetworkPolicy")["spec"]
    assert port in {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    egress = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    for backend in settings.backends:
        assert backend.url.port in egress
    for group in settings.discovery.groups:
        assert group.port in egress


def test_default_overlay_reaches_its_redis(tmp_path: Path) -> None:
    docs = render("default")
    settings = _settings_of(
        _config_map_text(docs, one(docs, "Deployment", "gateway")), tmp_path, "gateway.yaml"
    )
    url = urlsplit(settings.index.redis_url or "")
    redis = one(docs, "Service", "redis")
    assert url.hostname == redis["metadata"]["name"]
    assert url.port == redis["spec"]["ports"][0]["port"]
    statefulset = one(docs, "StatefulSet", "redis")
    assert "volatile-lru" in statefulset["spec"]["template"]["spec"]["containers"][0]["args"]


def test_external_redis_url_comes_from_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render("external-redis")
    deployment = one(docs, "Deployment", "gateway")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GATEWAY_INDEX__REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "gateway-redis",
        "key": "url",
    }
    text = _config_map_text(docs, deployment)
    given = "rediss+cluster://10.0.0.1:6379,10.0.0.2:6379"
    monkeypatch.setenv("GATEWAY_INDEX__REDIS_URL", given)
    assert _settings_of(text, tmp_path, "gateway.yaml").index.redis_url == given


def test_dns_discovery_resolves_the_headless_service(tmp_path: Path) -> None:
    docs = render("dns-discovery")
    settings = _settings_of(
        _config_map_text(docs, one(docs, "Deployment", "gateway")), tmp_path, "gateway.yaml"
    )
    service = one(docs, "Service", "vllm")
    assert service["spec"]["clusterIP"] == "None"
    (group,) = settings.discovery.groups
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert group.host == f"{name}.{namespace}.svc.cluster.local"
    assert group.port == service["spec"]["ports"][0]["port"]
    assert settings.backends == []


# --- docker-compose.yml ----------------------------------------------------------------------


def _compose_file(service: str, target: str) -> Path:
    for volume in COMPOSE["services"][service]["volumes"]:
        source, mounted = volume.split(":")[:2]
        if mounted == target:
            return ROOT / source
    raise AssertionError(f"{service} mounts nothing at {target}")


def _duration_s(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return float(match.group(1))


def test_compose_gateways_agree_with_the_code() -> None:
    services = COMPOSE["services"]
    sim = _parse(["prefix-gateway", *services["sim"]["command"]])
    sim_ports = {sim.base_port + i for i in range(sim.backends)}
    for name in GATEWAY_SERVICES:
        service = services[name]
        args = _parse(_image_command(service["command"]))
        assert args.command == "serve"
        settings = load_settings(_compose_file(name, args.config))
        assert args.config == _config_path()
        assert settings.index.kind == "redis"
        assert urlsplit(settings.index.redis_url or "").hostname == "redis"
        assert {b.url.host for b in settings.backends} == {"sim"}
        assert {b.url.port for b in settings.backends} == sim_ports
        assert _duration_s(service["stop_grace_period"]) > _grace_needed(settings)
        assert set(service["depends_on"]) == {"redis", "sim"}
    health = " ".join(services["sim"]["healthcheck"]["test"])
    assert f":{sim.base_port}/health" in health
    assert services["sim"]["image"] == services["gateway-1"]["image"]


def test_compose_proxy_and_prometheus_reach_every_gateway() -> None:
    services = COMPOSE["services"]
    port = load_settings(_compose_file("gateway-1", _config_path())).server.port
    targets = {f"{name}:{port}" for name in GATEWAY_SERVICES}
    nginx = _compose_file("proxy", "/etc/nginx/nginx.conf").read_text()
    assert set(re.findall(r"server (\S+:\d+)", nginx)) == targets
    assert re.search(r"listen (\d+);", nginx).group(1) == "8080"  # type: ignore[union-attr]
    assert services["proxy"]["ports"] == ["127.0.0.1:8080:8080"]
    assert set(services["proxy"]["depends_on"]) == set(GATEWAY_SERVICES)
    prometheus = read_yaml(_compose_file("prometheus", "/etc/prometheus/prometheus.yml"))
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "gateway"  # the rules' up{job="gateway"}
    assert set(job["static_configs"][0]["targets"]) == targets
    rules = _compose_file("prometheus", "/etc/prometheus/rules/gateway.yaml")
    assert rules == DEPLOY / "observability" / "rules.yaml"
    dashboard = _compose_file("grafana", "/var/lib/grafana/dashboards/prefix-gateway.json")
    assert dashboard == DEPLOY / "observability" / "dashboard.json"
    for service in services.values():
        for volume in service.get("volumes", []):
            assert (ROOT / volume.split(":")[0]).exists(), volume


# --- what the gateway serves -----------------------------------------------------------------


def test_probe_paths_are_served(
    sim_fleet: Callable[..., SimFleetHandle], gateway: Callable[..., GatewayHandle]
) -> None:
    fleet = sim_fleet(1)
    gw = gateway(fleet.backend_settings())
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code in (200, 503)
        assert set(ready.json()) >= {"ready", "draining"}
        assert client.get("/metrics").status_code == 200
        assert client.get("/no-such-probe").status_code == 404
