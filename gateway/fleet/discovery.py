"""Backend discovery through DNS: resolve each group's name periodically and follow changes."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

from gateway.fleet.dns_settings import DiscoverySettings, DnsGroupSettings
from gateway.settings import BackendSettings, GatewaySettings

log = logging.getLogger("gateway.discovery")

# host, port, address family (socket.AF_UNSPEC, AF_INET, AF_INET6) -> the addresses
Resolver = Callable[[str, int, int], Awaitable[Sequence[str]]]


def address_family(name: str) -> int:
    """The socket family of a group's `family` setting."""
    return {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(name, socket.AF_UNSPEC)


async def system_resolver(host: str, port: int, family: int) -> list[str]:
    """The addresses the system resolver (getaddrinfo: /etc/hosts, then DNS) gives `host`."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _ordered(addresses: Sequence[str]) -> tuple[str, ...]:
    """Distinct addresses in a stable order (IPv4 before IPv6, numerically)."""
    ips = {ipaddress.ip_address(address.split("%", 1)[0]) for address in addresses}
    return tuple(ip.compressed for ip in sorted(ips, key=lambda ip: (ip.version, int(ip))))


class DnsDiscovery:
    """Knows each configured group's addresses; `start` follows changes and reports them.

    `refresh` resolves every group once; `on_change` is awaited after a periodic refresh that
    changed some group's addresses. A name that fails to resolve (or times out) keeps the
    addresses it last had, so a DNS outage does not empty the fleet.
    """

    def __init__(self, resolver: Resolver, on_change: Callable[[], Awaitable[object]]) -> None:
        self._resolver = resolver
        self._on_change = on_change
        self._settings = DiscoverySettings()
        self._addresses: dict[str, tuple[str, ...]] = {}
        self._failing: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def settings(self) -> DiscoverySettings:
        """The groups being followed."""
        return self._settings

    def configure(self, settings: DiscoverySettings) -> bool:
        """Follow these groups from now on; True if some group is new (not resolved yet)."""
        self._settings = settings
        wanted = {group.id_prefix for group in settings.groups}
        for prefix in set(self._addresses) - wanted:
            del self._addresses[prefix]
        self._failing &= wanted
        return any(group.id_prefix not in self._addresses for group in settings.groups)

    def addresses(self, group: DnsGroupSettings) -> tuple[str, ...]:
        """The addresses a group resolved to last (empty before its first answer)."""
        return self._addresses.get(group.id_prefix, ())

    async def refresh(self) -> bool:
        """Resolve every group once; True if any group's addresses changed."""
        results = await asyncio.gather(*(self._resolve(g) for g in self._settings.groups))
        changed = False
        for group, found in zip(self._settings.groups, results, strict=True):
            if found is None:
                continue
            before = self._addresses.get(group.id_prefix)
            if found != before:
                self._log_change(group, before or (), found)
                self._addresses[group.id_prefix] = found
                changed = True
        return changed

    async def _resolve(self, group: DnsGroupSettings) -> tuple[str, ...] | None:
        timeout_s = self._settings.resolve_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                found = await self._resolver(group.host, group.port, address_family(group.family))
            ordered = _ordered(found)[: group.max_backends]
        except (OSError, TimeoutError, ValueError) as exc:
            if group.id_prefix not in self._failing:
                self._failing.add(group.id_prefix)
                log.warning(
                    "discovery: %s did not resolve (%s); keeping its %d known addresses",
                    group.dns, exc or type(exc).__name__, len(self.addresses(group)),
                )  # fmt: skip
            return None
        if group.id_prefix in self._failing:
            self._failing.discard(group.id_prefix)
            log.warning("discovery: %s resolves again", group.dns)
        return ordered

    @staticmethod
    def _log_change(group: DnsGroupSettings, before: Sequence[str], after: Sequence[str]) -> None:
        added = [a for a in after if a not in before]
        removed = [a for a in before if a not in after]
        log.info(
            "discovery: %s has %d addresses (added %s, removed %s)",
            group.dns, len(after), added, removed,
        )  # fmt: skip

    def backends(self) -> list[BackendSettings]:
        """The backends of every group's current addresses."""
        return [
            group.backend_for(address)
            for group in self._settings.groups
            for address in self.addresses(group)
        ]

    def expand(self, settings: GatewaySettings) -> GatewaySettings:
        """`settings` with the discovered backends after its static ones.

        A discovered backend whose id a static entry already uses is left out (the static
        entry wins), so ids stay unique.
        """
        static = {backend.id for backend in settings.backends}
        found = [backend for backend in self.backends() if backend.id not in static]
        if not found:
            return settings
        return settings.model_copy(update={"backends": [*settings.backends, *found]})

    def start(self) -> None:
        """Resolve again every `interval_s` in the background; changes go to `on_change`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    @property
    def running(self) -> bool:
        """Whether the background loop runs."""
        return self._task is not None

    async def poll_once(self) -> bool:
        """One round of the loop: resolve every group, report a change; True if one came."""
        if not await self.refresh():
            return False
        await self._on_change()
        return True

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._settings.interval_s)
            try:
                await self.poll_once()
            except Exception:  # the loop must outlive one bad round
                log.exception("discovery: applying a DNS change failed")

    async def close(self) -> None:
        """Stop following."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
