"""Builders for load exchange tests: a fleet of placeholder backends and an exchange on it."""

from __future__ import annotations

from typing import Any

from gateway.fleet.exchange import LoadExchange
from gateway.fleet.registry import Fleet
from gateway.prefix.redis_guard import script_client
from gateway.settings import BackendSettings
from tests.support.harness import MODEL


def fleet_of(*ids: str) -> Fleet:
    """A fleet of placeholder backends serving MODEL (never contacted)."""
    return Fleet.from_settings(
        [BackendSettings(id=i, url=f"http://{i}.test:8000", models=[MODEL]) for i in ids]
    )


def exchange_on(url: str, fleet: Fleet, key: bytes, replica: str, **kw: Any) -> LoadExchange:
    """A load exchange on `url` polling every 20 ms, as a replica would run it."""
    client = script_client(url, max_connections=2, socket_timeout_s=0.2)
    return LoadExchange(
        client, fleet, key=key, replica_id=replica, interval_s=0.02, timeout_s=0.2, **kw
    )
