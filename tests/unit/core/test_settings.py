"""Configuration: YAML loading, strict validation naming field paths, `GATEWAY_*` overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import ConfigError, GatewaySettings, load_settings, settings_from_mapping

REPO = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO / "config" / "gateway.yaml"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray GATEWAY_* variable from the caller's shell may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("GATEWAY_"):
            monkeypatch.delenv(name)


def backend(backend_id: str = "b0", **extra: Any) -> dict[str, Any]:
    return {"id": backend_id, "url": "http://127.0.0.1:8001", "models": ["m"], **extra}


def config(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"backends": [backend()]}
    data.update(sections)
    return data


def config_error(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    return str(info.value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- valid configurations ----------------------------------------------------------------------


def test_demo_config_loads() -> None:
    settings = load_settings(DEMO_CONFIG)
    assert isinstance(settings, GatewaySettings)
    assert settings.server.port == 8080
    assert settings.index.kind == "memory"
    assert settings.routing.policy == "profile"
    assert [b.id for b in settings.backends] == ["sim-0", "sim-1", "sim-2", "sim-3"]
    assert settings.backends[0].base_url == "http://127.0.0.1:8001"
    assert settings.backends[0].models == ["sim-llama-8b"]


def test_minimal_mapping_gets_defaults() -> None:
    settings = settings_from_mapping(config())
    assert settings.server.port == 8080
    assert settings.routing.profile in settings.routing.profiles
    assert settings.backends[0].engine == "vllm"


def test_yaml_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server: {host: 0.0.0.0, port: 9000}\n"
        "routing: {policy: sglang_threshold, threshold: {cache_threshold: 0.5}}\n"
        "backends:\n"
        "  - {id: a, url: 'http://a:1', engine: tgi, models: [m], prefill_tokens_per_s: 5000}\n",
    )
    settings = load_settings(path)
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 9000
    assert settings.routing.policy == "sglang_threshold"
    assert settings.routing.threshold.cache_threshold == 0.5
    assert settings.backends[0].engine == "tgi"
    assert settings.backends[0].prefill_tokens_per_s == 5000


def test_redis_index_with_url_is_accepted() -> None:
    settings = settings_from_mapping(config(index={"kind": "redis", "redis_url": "redis://r:6379"}))
    assert settings.index.redis_url == "redis://r:6379"


# --- unknown keys name their path --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (config(bogus=1), "bogus"),
        (config(server={"port": 1, "prt": 2}), "server.prt"),
        (
            config(routing={"threshold": {"cache_threshold": 0.3, "extra": 1}}),
            "routing.threshold.extra",
        ),
        ({"backends": [backend(), backend("b1", urll="http://x")]}, "backends.1.urll"),
    ],
)
def test_unknown_keys_are_rejected_naming_the_path(data: dict[str, Any], path: str) -> None:
    message = config_error(data)
    assert f"{path}:" in message
    assert "Extra inputs are not permitted" in message


# --- bad values name their path ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (config(server={"port": -1}), "server.port"),
        (config(server={"port": 65536}), "server.port"),
        (config(server={"max_body_bytes": 0}), "server.max_body_bytes"),
        ({"backends": [backend(url="not a url")]}, "backends.0.url"),
        ({"backends": [backend(url="http://x:1/?q=1")]}, "backends.0.url"),
        ({"backends": [backend(models=[])]}, "backends.0.models"),
        ({"backends": [backend(models=[""])]}, "backends.0.models.0"),
        ({"backends": [backend(engine="ollama")]}, "backends.0.engine"),
        ({"backends": [backend(id="has space")]}, "backends.0.id"),
        ({"backends": []}, "backends"),
        ({}, "backends"),
        (config(index={"kind": "redis"}), "index"),
        (config(index={"redis_url": "http://r:6379"}), "index"),
        (config(routing={"policy": "random"}), "routing.policy"),
        (config(routing={"profile": "fast"}), "routing"),
        (
            config(routing={"profiles": {"default": {"scorers": {"cost": 0}}}}),
            "routing.profiles.default",
        ),
        (
            config(routing={"profiles": {"default": {"scorers": {"magic": 1}}}}),
            "routing.profiles.default.scorers.magic.[key]",
        ),
    ],
)
def test_bad_values_are_rejected_naming_the_path(data: dict[str, Any], path: str) -> None:
    message = config_error(data)
    assert f"\n  {path}:" in message, message


def test_duplicate_backend_ids_are_rejected() -> None:
    message = config_error({"backends": [backend("dup"), backend("dup", url="http://h:2")]})
    assert "'dup' appears more than once" in message


def test_redis_without_url_message_says_so() -> None:
    assert "redis_url is not set" in config_error(config(index={"kind": "redis"}))


def test_missing_profile_message_names_it() -> None:
    message = config_error(config(routing={"profile": "fast"}))
    assert "'fast' is not in routing.profiles" in message


def test_profile_with_only_zero_weights_is_rejected() -> None:
    message = config_error(
        config(routing={"profiles": {"default": {"scorers": {"cost": 0, "load": 0.0}}}})
    )
    assert "positive weight" in message


def test_every_error_is_listed_not_only_the_first() -> None:
    message = config_error(config(server={"port": -1, "log_level": "loud"}))
    assert "server.port:" in message
    assert "server.log_level:" in message


def test_error_message_names_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path, "server: {port: -5}\nbackends: [{id: a, url: 'http://a:1', models: [m]}]\n"
    )
    with pytest.raises(ConfigError, match=r"server\.port") as info:
        load_settings(path)
    assert str(path) in str(info.value)


# --- environment overrides ---------------------------------------------------------------------


def test_environment_overrides_file_and_keeps_other_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        "server: {host: 0.0.0.0, port: 9000, log_level: debug}\n"
        "backends: [{id: a, url: 'http://a:1', models: [m]}]\n",
    )
    monkeypatch.setenv("GATEWAY_SERVER__PORT", "9100")
    settings = load_settings(path)
    assert settings.server.port == 9100
    assert settings.server.host == "0.0.0.0"
    assert settings.server.log_level == "debug"
    assert [b.id for b in settings.backends] == ["a"]


def test_environment_override_with_underscored_and_deep_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_SERVER__MAX_BODY_BYTES", "1024")
    monkeypatch.setenv("GATEWAY_ROUTING__THRESHOLD__CACHE_THRESHOLD", "0.75")
    settings = settings_from_mapping(
        config(routing={"policy": "sglang_threshold", "threshold": {"balance_abs_threshold": 8}})
    )
    assert settings.server.max_body_bytes == 1024
    assert settings.routing.threshold.cache_threshold == 0.75
    assert settings.routing.threshold.balance_abs_threshold == 8
    assert settings.routing.policy == "sglang_threshold"


def test_environment_can_complete_a_section_of_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_INDEX__REDIS_URL", "redis://cache:6379/0")
    settings = settings_from_mapping(config(index={"kind": "redis", "key_prefix": "x"}))
    assert settings.index.kind == "redis"
    assert settings.index.redis_url == "redis://cache:6379/0"
    assert settings.index.key_prefix == "x"


def test_bad_environment_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SERVER__PORT", "not-a-port")
    assert "server.port:" in config_error(config())


def test_unrelated_gateway_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads GATEWAY_CONFIG for the file path; it must not count as an unknown setting.
    monkeypatch.setenv("GATEWAY_CONFIG", "/etc/gateway.yaml")
    assert settings_from_mapping(config()).server.port == 8080


def test_environment_is_not_read_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER__PORT", "1234")
    assert settings_from_mapping(config()).server.port == 8080


# --- unreadable input --------------------------------------------------------------------------


@pytest.mark.parametrize("data", [[1, 2], "text", 3, None])
def test_not_a_mapping_is_rejected(data: Any) -> None:
    assert "must be a mapping" in config_error(data)


def test_yaml_list_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(path)


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 1\nbackends: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(tmp_path / "absent.yaml")


def test_empty_file_reports_missing_backends(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"backends: Field required"):
        load_settings(path)


def test_settings_are_frozen() -> None:
    settings = settings_from_mapping(config())
    with pytest.raises(Exception, match="frozen"):
        settings.server.port = 1  # type: ignore[misc]


def test_demo_config_round_trips_through_yaml() -> None:
    data = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    assert settings_from_mapping(data) == load_settings(DEMO_CONFIG)
