"""`serve --workers 2`: signals to the master drain and reload every real worker process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fault.test_lifecycle import JOIN_BOUND_S, StreamResult, start_streams
from tests.fault.test_lifecycle_reload import CHAT, ROUND_ROBIN, Traffic
from tests.support.gateway_process import GatewayProcess

WORKERS = 2


def worker_pids(master: int) -> set[int]:
    """The master's worker processes, from /proc (its resource tracker is not one)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == master and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def only(pid: int, pids: list[int]) -> Iterator[None]:
    """Stop every other worker (SIGSTOP), so new connections go to `pid`; resume them after."""
    others = [p for p in pids if p != pid]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        yield
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)


def backends_seen(url: str, n: int) -> set[str]:
    """The backends of `n` requests, each on a new connection."""
    seen = set()
    for _ in range(n):
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=JOIN_BOUND_S)
        assert r.status_code == 200, r.text
        seen.add(r.headers["x-gateway-backend"])
    return seen


@pytest.fixture
def workers_gateway(tmp_path, redis_url, unique_prefix) -> Iterator[Callable[..., WorkersGateway]]:
    """Factory of gateways with `--workers 2` on the Redis index; stopped after the test."""
    started: list[WorkersGateway] = []

    def make(backends, **sections) -> WorkersGateway:
        index = {"kind": "redis", "redis_url": redis_url, "key_prefix": unique_prefix}
        gw = WorkersGateway(tmp_path, backends, index=index, **sections)
        started.append(gw)
        return gw.start_workers()

    yield make
    for gw in started:
        gw.stop()
        for pid in gw.seen:  # only if the master could not stop them
            with contextlib.suppress(OSError):
                if running(pid) and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


class WorkersGateway(GatewayProcess):
    """A `GatewayProcess` started with `--workers`; knows its worker pids."""

    def __init__(self, *args, **sections) -> None:
        self.index = sections["index"]
        super().__init__(*args, **sections)
        self.seen: set[int] = set()

    def write_config(self, backends, **sections) -> None:
        """The same file, always with the Redis index the workers need."""
        super().write_config(backends, **{"index": self.index, **sections})

    def start_workers(self) -> WorkersGateway:
        self.start(args=("--workers", str(WORKERS)))
        self.wait_for_line(f"worker {WORKERS} started")
        for pid in self.workers():
            self.wait_for_line(f"[worker {pid}] gateway ready")
        return self

    def workers(self) -> list[int]:
        """The worker pids now, in order."""
        assert self.proc is not None
        pids = sorted(worker_pids(self.proc.pid))
        self.seen.update(pids)
        return pids

    def each_worker_logs(self, message: str) -> list[str]:
        """Wait until every worker logged `message`; their lines."""
        return [self.wait_for_line(f"[worker {pid}] {message}") for pid in self.workers()]


def test_sigterm_to_the_master_drains_every_worker_then_it_exits_0(sim_fleet, workers_gateway):
    # Real time: 20 ms per output token, so 250 tokens (5 s) outlast the delay (4 s).
    fleet = sim_fleet(1, time_scale=1.0, decode_s_per_token=0.02, prefill_tokens_per_s=1e6)
    gw = workers_gateway(fleet.backend_settings(), server={"drain_delay_s": 4, "drain_s": 30})
    pids = gw.workers()
    assert len(pids) == WORKERS
    results: list[StreamResult] = []
    threads = []
    for pid in pids:  # two long streams on each worker
        with only(pid, pids):
            started, their_threads = start_streams(gw.url, 2, max_tokens=250)
        results += started
        threads += their_threads
    gw.signal(signal.SIGTERM)
    gw.each_worker_logs("draining:")
    ready = httpx.get(gw.url + "/readyz", timeout=JOIN_BOUND_S)
    assert ready.status_code == 503
    assert ready.json()["draining"] is True
    for thread in threads:
        thread.join(JOIN_BOUND_S)
    # Each ended by itself: 200, no client error, [DONE] last, no in-band error before it.
    ends = [(r.status, r.error, r.events[-1:]) for r in results]
    assert ends == [(200, None, [b"[DONE]"])] * len(results)
    assert [e for r in results for e in r.events if b'"error"' in e] == []
    assert gw.wait() == 0
    assert not any(running(pid) for pid in pids)
    for pid in pids:
        gw.wait_for_line(f"[worker {pid}] listener closed")
    assert not any("drain window over" in line for line in gw.log)


def test_sighup_to_the_master_reloads_every_worker_under_traffic(sim_fleet, workers_gateway):
    fleet = sim_fleet(3)
    entries = fleet.backend_settings()
    gw = workers_gateway(entries[:2], routing=ROUND_ROBIN)
    pids = gw.workers()
    traffic = Traffic(gw.url)
    try:
        traffic.mark_and_wait(20)
        assert set(traffic.after_mark) == {"sim-0", "sim-1"}
        # sim-0 leaves, sim-2 joins: in every worker, without a restart.
        gw.write_config(entries[1:], routing=ROUND_ROBIN)
        gw.signal(signal.SIGHUP)
        for line in gw.each_worker_logs("configuration reloaded"):
            assert "added ['sim-2'], removed ['sim-0']" in line
        traffic.mark_and_wait(40)
        assert set(traffic.after_mark) == {"sim-1", "sim-2"}
        # An invalid file: every worker rejects it, the previous config keeps serving.
        gw.config_path.write_text(
            gw.config_path.read_text().replace(entries[1]["url"], "not-a-url")
        )
        gw.signal(signal.SIGHUP)
        for line in gw.each_worker_logs("reload rejected"):
            assert "backends.0.url" in line
        traffic.mark_and_wait(20)
        assert set(traffic.after_mark) == {"sim-1", "sim-2"}
    finally:
        traffic.finish()
    assert traffic.failures == []
    assert gw.workers() == pids
    for pid in pids:  # each worker by itself routes to the new backend, never the old one
        with only(pid, pids):
            assert backends_seen(gw.url, 6) == {"sim-1", "sim-2"}


def test_a_killed_worker_is_replaced_while_the_others_answer(sim_fleet, workers_gateway):
    fleet = sim_fleet(2)
    gw = workers_gateway(fleet.backend_settings(), routing=ROUND_ROBIN)
    killed, survivor = gw.workers()
    os.kill(killed, signal.SIGKILL)
    exited = gw.wait_for_line(f"(pid {killed}) exited unexpectedly (killed by SIGKILL)")
    slot = re.search(r"worker (\d+) \(pid", exited)
    assert slot is not None
    assert backends_seen(gw.url, 6)  # the survivor answers meanwhile
    restarted = gw.wait_for_line(f"worker {slot[1]} restarted")
    pid = re.search(r"\(pid (\d+),", restarted)
    assert pid is not None
    new = int(pid[1])
    gw.wait_for_line(f"[worker {new}] gateway ready")
    assert gw.workers() == sorted([survivor, new])
    assert not running(killed)
    with only(new, [new, survivor]):
        assert backends_seen(gw.url, 4) == {"sim-0", "sim-1"}
