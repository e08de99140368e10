"""Configuration of backends found through DNS: `discovery.groups`, one per headless Service."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from gateway.settings import BackendSettings

# Fields of a discovered backend that come from its address, never from the template.
ADDRESS_FIELDS = ("id", "url")


class DnsGroupSettings(BaseModel):
    """Every address one DNS name resolves to is a backend, built from the `backend` template.

    `dns` is `name:port` (a Kubernetes headless Service: one A/AAAA record per ready pod). A
    discovered backend's id is `<id_prefix>-<address>`, the same in every replica, and its URL
    `<scheme>://<address>:<port>`; every other `backends[]` field comes from `backend`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dns: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+:[0-9]{1,5}$")]
    id_prefix: Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9_.-]+$")]
    scheme: Literal["http", "https"] = "http"
    family: Literal["any", "ipv4", "ipv6"] = "any"
    max_backends: Annotated[int, Field(ge=1, le=4096)] = 256
    backend: dict[str, Any]

    @property
    def host(self) -> str:
        """The name to resolve."""
        return self.dns.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        """The port every discovered backend listens on."""
        return int(self.dns.rsplit(":", 1)[1])

    @model_validator(mode="after")
    def _valid_template(self) -> DnsGroupSettings:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"dns: port {self.port} is out of range")
        taken = [name for name in ADDRESS_FIELDS if name in self.backend]
        if taken:
            raise ValueError(f"backend.{taken[0]} comes from the discovered address; remove it")
        try:
            self.backend_for("192.0.2.1")
        except ValidationError as exc:
            first = exc.errors()[0]
            path = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"backend.{path}: {first['msg']}") from None
        return self

    def backend_for(self, address: str) -> BackendSettings:
        """The backend settings of one resolved address (validated like a static entry)."""
        from gateway.settings import BackendSettings

        ip = ipaddress.ip_address(address)
        host = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
        return BackendSettings(
            id=f"{self.id_prefix}-{ip.compressed}",
            url=f"{self.scheme}://{host}:{self.port}",  # type: ignore[arg-type]
            **self.backend,
        )


class DiscoverySettings(BaseModel):
    """Backends found through DNS besides the static `backends:` list, followed as they change.

    Every `interval_s` each group's name is resolved again (at most `resolve_timeout_s`); an
    address that appears joins the fleet, one that is gone leaves it, through the same path as
    a config reload. A name that fails to resolve keeps the addresses it last had.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    resolve_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    groups: list[DnsGroupSettings] = []

    @model_validator(mode="after")
    def _distinct_groups(self) -> DiscoverySettings:
        prefixes = [group.id_prefix for group in self.groups]
        for prefix in prefixes:
            if prefixes.count(prefix) > 1:
                raise ValueError(f"id_prefix {prefix!r} is used by more than one group")
        return self
