"""Config reload (SIGHUP, POST /admin/reload) under traffic, invalid files, backend drain."""

from __future__ import annotations

import signal
import threading
from collections import Counter

import httpx
import pytest

from gateway.app import GatewayApp
from gateway.deps import build_deps
from gateway.settings import settings_from_mapping
from tests.support.gateway_process import GatewayProcess
from tests.support.harness import MODEL
from tests.support.serving import ServerThread

CHAT = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
ROUND_ROBIN = {"policy": "round_robin"}
ADMIN = {"authorization": "Bearer s3cret-admin"}


class Traffic:
    """Clients sending requests until told to stop (bounded), counting failures and backends."""

    def __init__(self, url: str, clients: int = 2, limit: int = 5000) -> None:
        self.url = url
        self.limit = limit
        self.failures: list[str] = []
        self.after_mark: Counter[str] = Counter()
        self.generation = 0
        self.stop = threading.Event()
        self.sent_after_mark = threading.Semaphore(0)
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(self.limit):
                if self.stop.is_set():
                    return
                sent_in = self.generation
                try:
                    r = client.post(self.url + "/v1/chat/completions", json=CHAT)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text}")
                elif sent_in and sent_in == self.generation:
                    counted = self.sent_after_mark
                    self.after_mark[r.headers["x-gateway-backend"]] += 1
                    counted.release()

    def mark_and_wait(self, n: int) -> None:
        """Count the backends of requests sent from now on; wait for `n` answers."""
        self.sent_after_mark = threading.Semaphore(0)
        self.after_mark = Counter()
        self.generation += 1
        for _ in range(n):
            assert self.sent_after_mark.acquire(timeout=30)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)


def test_sighup_reloads_under_traffic_without_a_failed_request(sim_fleet, tmp_path):
    fleet = sim_fleet(3)
    entries = fleet.backend_settings()
    gw = GatewayProcess(tmp_path, entries[:2], routing=ROUND_ROBIN).start()
    traffic = Traffic(gw.url)
    try:
        traffic.mark_and_wait(20)
        assert set(traffic.after_mark) == {"sim-0", "sim-1"}
        # sim-0 leaves, sim-2 joins.
        gw.write_config(entries[1:], routing=ROUND_ROBIN)
        gw.signal(signal.SIGHUP)
        gw.wait_for_line("configuration reloaded")
        traffic.mark_and_wait(40)
        assert set(traffic.after_mark) == {"sim-1", "sim-2"}
        # An invalid file is rejected with the field path; the old config keeps serving.
        gw.config_path.write_text(
            gw.config_path.read_text().replace(entries[1]["url"], "not-a-url")
        )
        gw.signal(signal.SIGHUP)
        assert "backends.0.url" in gw.wait_for_line("reload rejected")
        traffic.mark_and_wait(20)
        assert set(traffic.after_mark) == {"sim-1", "sim-2"}
    finally:
        traffic.finish()
        gw.stop()
    assert traffic.failures == []


def test_admin_reload_and_backend_drain(sim_fleet, tmp_path):
    fleet = sim_fleet(2)
    server = {"admin_key": "s3cret-admin"}
    gw = GatewayProcess(tmp_path, fleet.backend_settings(), server=server, routing=ROUND_ROBIN)
    gw.start()
    try:
        assert httpx.post(gw.url + "/admin/reload").status_code == 401
        wrong = {"authorization": "Bearer nope"}
        r = httpx.post(gw.url + "/admin/reload", headers=wrong)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_admin_key"
        r = httpx.post(gw.url + "/admin/reload", headers=ADMIN)
        assert r.status_code == 200
        assert r.json()["reloaded"] is True

        r = httpx.post(gw.url + "/admin/backends/sim-0/drain", headers=ADMIN)
        assert r.json() == {"backend": "sim-0", "drained": True}
        seen = {
            httpx.post(gw.url + "/v1/chat/completions", json=CHAT).headers["x-gateway-backend"]
            for _ in range(6)
        }
        assert seen == {"sim-1"}
        httpx.post(gw.url + "/admin/backends/sim-0/undrain", headers=ADMIN).raise_for_status()
        seen = {
            httpx.post(gw.url + "/v1/chat/completions", json=CHAT).headers["x-gateway-backend"]
            for _ in range(6)
        }
        assert seen == {"sim-0", "sim-1"}
        r = httpx.post(gw.url + "/admin/backends/nope/drain", headers=ADMIN)
        assert r.status_code == 404
        assert r.json()["error"]["param"] == "backend_id"
    finally:
        gw.stop()


def test_admin_routes_are_absent_without_a_key(sim_fleet, tmp_path):
    fleet = sim_fleet(1)
    gw = GatewayProcess(tmp_path, fleet.backend_settings()).start()
    try:
        r = httpx.post(gw.url + "/admin/reload", headers=ADMIN)
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "invalid_request_error"
    finally:
        gw.stop()


@pytest.mark.parametrize("change", ["routing", "one_backend"])
def test_reload_keeps_the_objects_of_unchanged_backends(sim_fleet, change):
    fleet = sim_fleet(2)
    entries = fleet.backend_settings()
    settings = settings_from_mapping({"backends": entries})
    app = GatewayApp(build_deps(settings))
    server = ServerThread([app]).start()
    try:
        server.call(app.deps.start())
        before = {b.id: b for b in app.deps.fleet.backends}
        old_deps = app.deps
        r = httpx.post(server.urls[0] + "/v1/chat/completions", json=CHAT)
        assert r.status_code == 200
        if change == "routing":
            new = settings_from_mapping({"backends": entries, "routing": ROUND_ROBIN})
        else:
            changed = [entries[0], {**entries[1], "prefill_tokens_per_s": 123.0}]
            new = settings_from_mapping({"backends": changed})
        assert server.call(app.runtime.apply(new)).ok
        after = {b.id: b for b in app.deps.fleet.backends}
        assert app.deps is not old_deps
        assert after["sim-0"] is before["sim-0"]
        assert (after["sim-1"] is before["sim-1"]) == (change == "routing")
        assert httpx.post(server.urls[0] + "/v1/chat/completions", json=CHAT).status_code == 200
        assert httpx.get(server.urls[0] + "/metrics").status_code == 200
    finally:
        server.call(app.runtime.close())
        server.stop()
