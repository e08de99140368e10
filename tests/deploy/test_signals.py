"""The container's serve arguments, run for real: SIGHUP reloads and SIGTERM drains it."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.deploy.files import one, render
from tests.support.gateway_process import GatewayProcess
from tests.support.harness import SimFleetHandle


def _deployment_serve_options() -> list[str]:
    """The Deployment's `serve` options but --config (the test writes its own file)."""
    container = one(render("default"), "Deployment", "gateway")["spec"]["template"]["spec"][
        "containers"
    ][0]
    args = list(container["args"])
    assert args[0] == "serve"
    at = args.index("--config")
    return args[1:at] + args[at + 2 :]


def test_signals_reach_the_gateway_run_with_the_deployments_arguments(
    tmp_path: Path, sim_fleet: Callable[..., SimFleetHandle]
) -> None:
    fleet = sim_fleet(1)
    gw = GatewayProcess(
        tmp_path, fleet.backend_settings(), server={"drain_delay_s": 0.2, "drain_s": 5}
    )
    gw.start(args=_deployment_serve_options())
    try:
        gw.signal(signal.SIGHUP)
        gw.wait_for_line("configuration reloaded")
        assert httpx.get(f"{gw.url}/healthz", timeout=5).status_code == 200
        gw.signal(signal.SIGTERM)
        gw.wait_for_line("draining:")
        assert gw.wait(30) == 0
    finally:
        gw.stop()
