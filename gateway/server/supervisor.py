"""Several worker processes on one socket, each with the gateway's own drain and reload."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from gateway.server.run import HANDLED_SIGNALS, serve

if TYPE_CHECKING:
    from gateway.app import GatewayApp

log = logging.getLogger("gateway.server")

AppFactory = Callable[[], "GatewayApp"]

WORKER_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [worker %(process)d] %(message)s"
# A worker that dies is started again after 0.5 s, 1 s, 2 s ... at most 30 s; one that ran
# for 30 s before it died starts the count again.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0


def run_worker(factory: AppFactory, host: str, port: int, sock: socket.socket, level: str) -> None:
    """One worker process: its own app from `factory`, served on the supervisor's socket.

    It runs in a process group of its own, so a terminal's Ctrl+C reaches the supervisor only
    (which forwards it once), and drains by itself if the supervisor dies.
    """
    os.setpgid(0, 0)
    logging.basicConfig(level=level.upper(), format=WORKER_LOG_FORMAT)
    _drain_when_orphaned()
    serve(factory(), host, port, sockets=[sock])


def _drain_when_orphaned() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        log.warning("the supervisor is gone: draining")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class Supervisor:
    """Runs `workers` processes of the gateway on one listening socket it binds.

    SIGTERM or SIGINT: forwarded as SIGTERM to every worker, which drains (a second one is
    forwarded too: the drain's hurry); the supervisor returns 0 once all have exited.
    SIGHUP: forwarded to every worker, which reloads the config file in-process.
    A worker that exits while not stopping is started again, after a bounded backoff.
    Workers start with these signals blocked; `GatewayServer` unblocks them once it has
    started, so a signal sent while a worker starts is acted on then, not fatal.
    """

    def __init__(
        self, factory: AppFactory, host: str, port: int, workers: int, log_level: str
    ) -> None:
        self._factory = factory
        self._host = host
        self._port = port
        self._log_level = log_level
        self._context = multiprocessing.get_context("spawn")
        self._slots = range(1, workers + 1)
        self._running: dict[int, BaseProcess] = {}
        self._started_at: dict[int, float] = {}
        self._failures: dict[int, int] = dict.fromkeys(self._slots, 0)
        self._restart_at: dict[int, float] = {}
        self._restarts: dict[int, int] = dict.fromkeys(self._slots, 0)
        self._stops = 0
        self._listener: socket.socket | None = None

    def run(self) -> int:
        """Bind, start the workers, supervise them until a stop; the exit status (0)."""
        self._listener = self._bind()
        wakeup, wakeup_writer = socket.socketpair()
        wakeup.setblocking(False)
        wakeup_writer.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wakeup_writer.fileno(), warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, self._note) for sig in HANDLED_SIGNALS}
        # The spawn context starts its resource tracker on first use, unblocking SIGTERM and
        # SIGINT afterwards: start it now, before `_start` blocks them around each spawn.
        resource_tracker.ensure_running()
        try:
            for slot in self._slots:
                self._start(slot)
            while self._running or (self._restart_at and not self._stops):
                self._step(wakeup)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            for closing in (wakeup, wakeup_writer):
                closing.close()
            self._close_listener()
        log.info("all workers exited")
        return 0

    def _bind(self) -> socket.socket:
        # uvicorn's own binding (IPv6 when the host has a colon, SO_REUSEADDR, inheritable),
        # with its "Uvicorn running on" line; listening here queues clients until a worker
        # accepts, also while one restarts.
        config = uvicorn.Config(
            self._factory, host=self._host, port=self._port, log_level=self._log_level
        )
        sock = config.bind_socket()
        sock.listen(config.backlog)
        return sock

    @staticmethod
    def _note(signum: int, frame: FrameType | None) -> None:
        """The handler: the signal's number reaches the loop through the wakeup socket."""

    def _close_listener(self) -> None:
        # Once the workers close theirs, new connections are refused, not queued unanswered.
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _start(self, slot: int) -> None:
        assert self._listener is not None, "workers start only before a stop"
        args = (self._factory, self._host, self._port, self._listener, self._log_level)
        process = self._context.Process(target=run_worker, args=args, name=f"worker-{slot}")
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            process.start()  # the child inherits the blocked mask
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._running[slot] = process
        self._started_at[slot] = time.monotonic()
        if restarts := self._restarts[slot]:
            log.info("worker %d restarted (pid %s, restart %d)", slot, process.pid, restarts)
        else:
            log.info("worker %d started (pid %s)", slot, process.pid)

    def _step(self, wakeup: socket.socket) -> None:
        """Wait for a signal, a worker's exit or a restart's time; act on what happened."""
        timeout = None
        if self._restart_at and not self._stops:
            timeout = max(0.0, min(self._restart_at.values()) - time.monotonic())
        sentinels = {p.sentinel: slot for slot, p in self._running.items()}
        ready = wait([wakeup, *sentinels], timeout)
        if wakeup in ready:
            for signum in wakeup.recv(64):
                self._on_signal(signal.Signals(signum))
        for key in ready:
            if isinstance(key, int) and key in sentinels:
                self._reap(sentinels[key])
        now = time.monotonic()
        for slot, due in list(self._restart_at.items()):
            if due <= now and not self._stops:
                del self._restart_at[slot]
                self._start(slot)

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:
            if self._stops:
                log.info("SIGHUP while stopping: not reloading")
                return
            log.info("SIGHUP: %d workers reload the configuration", len(self._running))
            self._forward(signal.SIGHUP)
            return
        self._stops += 1
        if self._stops == 1:
            log.info("%s: %d workers drain", sig.name, len(self._running))
            self._close_listener()
        else:
            log.warning("%s again: the workers end their remaining requests now", sig.name)
        self._forward(signal.SIGTERM)

    def _forward(self, sig: signal.Signals) -> None:
        for process in self._running.values():
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, sig)

    def _reap(self, slot: int) -> None:
        process = self._running.pop(slot)
        process.join()
        lived = time.monotonic() - self._started_at.pop(slot)
        how = _describe_exit(process.exitcode)
        if self._stops:
            log.info("worker %d (pid %s) exited (%s)", slot, process.pid, how)
            return
        if lived >= STABLE_S:
            self._failures[slot] = 0
        delay = min(BACKOFF_FIRST_S * 2 ** self._failures[slot], BACKOFF_MAX_S)
        self._failures[slot] += 1
        self._restarts[slot] += 1
        self._restart_at[slot] = time.monotonic() + delay
        log.error(
            "worker %d (pid %s) exited unexpectedly (%s); restarting it in %g s",
            slot,
            process.pid,
            how,
            delay,
        )
