"""The `prefix-gateway` command: serve, check-config, hash-key, sim."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from gateway.app import create_app, create_app_from_env
from gateway.server.run import serve
from gateway.server.supervisor import Supervisor
from gateway.settings import CONFIG_ENV, ConfigError, GatewaySettings, load_settings

DEFAULT_CONFIG = "config/gateway.yaml"


def _config_path(given: str | None) -> str:
    return given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def _load_or_exit(path: str) -> GatewaySettings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def _serve(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    settings = _load_or_exit(path)
    server = settings.server
    logging.basicConfig(
        level=server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    host = args.host or server.host
    port = args.port if args.port is not None else server.port
    if args.workers == 1:
        serve(create_app(settings, config_path=os.path.abspath(path)), host, port)
        return 0
    if settings.index.kind != "redis":
        print(
            "--workers > 1 needs the Redis index (index.kind: redis): with the memory index each "
            "worker process would keep its own cache map, so each would learn only a share of "
            "the traffic and route the same prefix to different backends. Run one worker per "
            "host, or share the index through Redis.",
            file=sys.stderr,
        )
        return 2
    # Each worker process builds its own app from the same file (create_app_from_env); the
    # supervisor forwards SIGTERM/SIGINT (drain) and SIGHUP (reload) to every worker.
    os.environ[CONFIG_ENV] = os.path.abspath(path)
    supervisor = Supervisor(create_app_from_env, host, port, args.workers, server.log_level)
    return supervisor.run()


def _check_config(args: argparse.Namespace) -> int:
    settings = _load_or_exit(args.file)
    print(
        f"{args.file}: OK ({len(settings.backends)} backends, index {settings.index.kind}, "
        f"routing {settings.routing.policy})"
    )
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from gateway.admission.keys import hash_key

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        print("no key given (pass it as an argument or on standard input)", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def _sim(args: argparse.Namespace) -> int:
    from gateway.sim.cli import run_sim

    return run_sim(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from gateway.sim.cli import add_sim_arguments

    parser = argparse.ArgumentParser(
        prog="prefix-gateway", description="Prefix-cache-aware gateway for LLM inference fleets."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config", help=f"YAML config (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})"
    )
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (more than 1 needs the Redis index)",
    )
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")
    check.set_defaults(func=_check_config)

    hashing = commands.add_parser(
        "hash-key", help="print the SHA-256 of an API key for auth.keys[].sha256"
    )
    hashing.add_argument("key", nargs="?", help="the key (default: read from standard input)")
    hashing.set_defaults(func=_hash_key)

    sim = commands.add_parser("sim", help="run a simulated fleet of model servers")
    add_sim_arguments(sim)
    sim.set_defaults(func=_sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m gateway`."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
