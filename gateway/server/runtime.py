"""The live container behind a swappable reference: reload, backend drain, lifecycle."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gateway.deps import Deps, activate, rebuild_deps, retire, reuse_backends
from gateway.fleet.discovery import DnsDiscovery, Resolver, system_resolver
from gateway.fleet.registry import Backend
from gateway.server.lifecycle import Lifecycle
from gateway.settings import ConfigError, GatewaySettings, load_settings

log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: `ok`, and a message (the field path of what was rejected)."""

    ok: bool
    message: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class Runtime:
    """Holds the current `Deps`; a request reads `runtime.deps` once and keeps that container.

    A reload builds a new container (backends whose settings did not change keep their
    objects, so their learned calibration and live state), starts it, swaps the reference,
    then retires the old one: requests in flight finish on the backends they were sent to.
    Backends found through DNS (`discovery:`) join and leave through the same swap.
    """

    def __init__(
        self, deps: Deps, config_path: str | None = None, resolver: Resolver | None = None
    ) -> None:
        self.deps = deps
        self.config_path = config_path
        # The configuration as given (static backends only); `deps.settings` adds the found ones.
        self._given = deps.settings
        self.discovery = DnsDiscovery(resolver or system_resolver, self._follow_discovery)
        self.lifecycle = Lifecycle()
        self._known: dict[str, Backend] = {b.id: b for b in deps.fleet.backends}
        self._drained: set[str] = set()
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the container; with DNS groups configured, resolve them and follow changes."""
        await self.deps.start()
        if self._given.discovery.groups:
            await self.apply(self._given, reason="discovery: first resolution")

    async def _follow_discovery(self) -> None:
        await self.apply(self._given, reason="discovery: fleet changed")

    @property
    def drained(self) -> frozenset[str]:
        """Backends taken out of routing by the admin drain."""
        return frozenset(self._drained)

    async def reload(self) -> ReloadResult:
        """Re-read the config file and swap it in; an invalid file keeps the old config."""
        if self.config_path is None:
            return ReloadResult(False, "no config file to reload (the gateway was built in code)")
        try:
            settings = load_settings(self.config_path)
        except ConfigError as exc:
            # One line, so log pipelines keep the field path with the message.
            detail = "; ".join(line.strip() for line in str(exc).splitlines())
            log.error("reload rejected, the previous configuration keeps serving: %s", detail)
            return ReloadResult(False, str(exc))
        return await self.apply(settings)

    async def apply(
        self, settings: GatewaySettings, reason: str = "configuration reloaded"
    ) -> ReloadResult:
        """Swap in `settings` (already validated) without dropping requests."""
        async with self._lock:
            self._given = settings
            if self.discovery.configure(settings.discovery):
                await self.discovery.refresh()  # a new group: its backends join in this swap
            if settings.discovery.groups:
                self.discovery.start()
            settings = self.discovery.expand(settings)
            before = {b.id for b in self.deps.fleet.backends} | self._drained
            backends = reuse_backends(settings, self._known)
            self._known = {b.id: b for b in backends}
            self._drained &= set(self._known)
            await self._swap(settings)
        after = set(self._known)
        added, removed = tuple(sorted(after - before)), tuple(sorted(before - after))
        message = f"{reason}: {len(after)} backends"
        log.info("%s (added %s, removed %s)", message, list(added), list(removed))
        return ReloadResult(True, message, added, removed)

    async def drain_backend(self, backend_id: str, drained: bool = True) -> bool:
        """Take a backend out of routing (requests in flight on it finish), or bring it back."""
        async with self._lock:
            if backend_id not in self._known:
                return False
            if drained:
                self._drained.add(backend_id)
            else:
                self._drained.discard(backend_id)
            await self._swap(self.deps.settings)
        log.info("backend %s %s", backend_id, "drained" if drained else "back in routing")
        return True

    async def _swap(self, settings: GatewaySettings) -> None:
        old = self.deps
        serving = [b for b in self._known.values() if b.id not in self._drained]
        new = rebuild_deps(old, settings, serving)
        await activate(new)
        self.deps = new
        # In the background: old clients wait out requests still on them before closing.
        task = asyncio.create_task(retire(old, new, settings.server.drain_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Close the current container (and any still retiring)."""
        await self.discovery.close()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.deps.close()
