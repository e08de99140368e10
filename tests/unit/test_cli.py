"""The command line: check-config and the serve options checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

GOOD = """
backends:
  - {id: a, url: "http://127.0.0.1:9", models: [m]}
"""


def test_check_config_accepts_a_valid_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    assert main(["check-config", str(path)]) == 0
    assert "OK (1 backends, index memory, routing profile)" in capsys.readouterr().out


def test_check_config_names_the_bad_field_and_exits_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD + "server: {port: -1}\n")
    with pytest.raises(SystemExit) as caught:
        main(["check-config", str(path)])
    assert caught.value.code == 2
    assert "server.port" in capsys.readouterr().err


def test_several_workers_need_the_redis_index(tmp_path: Path, capsys) -> None:
    path = tmp_path / "memory.yaml"
    path.write_text(GOOD)
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 2
    assert "needs the Redis index" in capsys.readouterr().err


@pytest.mark.parametrize(
    "path",
    sorted(str(p) for p in (Path(__file__).parents[2] / "config").rglob("*.yaml")),
)
def test_every_shipped_config_is_valid(path: str, capsys) -> None:
    assert main(["check-config", path]) == 0


def test_serve_runs_the_hardened_protocol_with_the_configured_idle_timeout() -> None:
    from gateway.server.run import uvicorn_options
    from gateway.settings import ServerSettings

    options = uvicorn_options(ServerSettings(keepalive_timeout_s=7.5))
    assert options["http"] == "gateway.server.protocol:GatewayHttpProtocol"
    assert options["timeout_keep_alive"] == 7.5
    import uvicorn

    from gateway.server.protocol import GatewayHttpProtocol

    config = uvicorn.Config(lambda *_: None, **options)
    config.load()
    assert config.http_protocol_class is GatewayHttpProtocol
