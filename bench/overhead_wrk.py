"""Running wrk with the overhead Lua scripts and reading the JSON line their done() prints."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LUA_DIR = Path(__file__).resolve().parent / "lua"
CLOSED_SCRIPT = LUA_DIR / "overhead_closed.lua"
OPEN_SCRIPT = LUA_DIR / "overhead_open.lua"
MARKER = "OVERHEAD_JSON "
INSTALL_HINT = (
    "wrk is not installed (or not on PATH). Install it with your package manager, e.g. on "
    "Debian/Ubuntu: sudo apt-get install wrk (package `wrk`); other systems: build it from the "
    "wrk project's sources and put the binary on PATH."
)
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed nothing we can read."""


def find_wrk() -> str:
    """The wrk executable, or WrkError with how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(INSTALL_HINT)
    return path


def wrk_version(wrk: str) -> str:
    """wrk's version line (wrk -v prints it and exits non-zero)."""
    try:
        done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "unknown"


@dataclass(frozen=True)
class WrkLoad:
    """What one wrk run sends: threads, connections, time, script and its arguments."""

    threads: int
    connections: int
    duration_s: int
    timeout_s: int
    stream: bool
    max_tokens: int
    model: str
    system_bytes: int = 0
    rate: float | None = None  # open loop: total requests per second; None = closed loop

    def argv(self, wrk: str, url: str) -> list[str]:
        """The wrk command line."""
        script = OPEN_SCRIPT if self.rate is not None else CLOSED_SCRIPT
        argv = [
            wrk,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{self.duration_s}s",
            f"--timeout={self.timeout_s}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            "1" if self.stream else "0",
            str(self.max_tokens),
            self.model,
            str(self.system_bytes),
        ]
        if self.rate is not None:
            argv += [f"{self.rate / self.threads:.6f}", str(self.threads)]
        return argv


@dataclass(frozen=True)
class WrkResult:
    """Parsed figures of one run (latencies in milliseconds)."""

    requests: int
    duration_s: float
    bytes: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    pacing: dict[str, float] | None
    wrk_cpu_s: float
    argv: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_total(self) -> int:
        """Non-2xx responses (wrk counts status >= 400) plus socket errors and timeouts."""
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 4),
            "rps": round(self.rps, 2),
            "bytes": self.bytes,
            "errors": self.errors,
            "error_total": self.error_total,
            "latency_ms": self.latency_ms,
            "pacing": self.pacing,
            "wrk_cpu_s": round(self.wrk_cpu_s, 4),
            "wrk_argv": self.argv,
        }


def parse_output(text: str) -> dict[str, Any]:
    """The JSON object on the OVERHEAD_JSON line of wrk's stdout."""
    for line in text.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            if not isinstance(data, dict):
                break
            return data
    raise WrkError("wrk printed no OVERHEAD_JSON line (did the Lua script fail?)")


def result_from(data: dict[str, Any], wrk_cpu_s: float, argv: list[str]) -> WrkResult:
    """A WrkResult from the parsed JSON line (microseconds become milliseconds)."""
    latency = {key: round(float(value) / 1000, 4) for key, value in data["latency_us"].items()}
    pacing = data.get("pacing")
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=float(data["duration_us"]) / 1e6,
        bytes=int(data["bytes"]),
        errors={kind: int(data["errors"].get(kind, 0)) for kind in ERROR_KINDS},
        latency_ms=latency,
        pacing={k: float(v) for k, v in pacing.items()} if isinstance(pacing, dict) else None,
        wrk_cpu_s=wrk_cpu_s,
        argv=argv,
    )


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(wrk: str, url: str, load: WrkLoad, log_path: Path) -> WrkResult:
    """Run wrk once (bounded by its duration plus a margin) and parse its figures."""
    argv = load.argv(wrk, url)
    before = _children_cpu_s()
    try:
        # subprocess.run kills wrk (by its pid) on timeout and on Ctrl-C before re-raising.
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=load.duration_s + load.timeout_s + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish in time: {' '.join(argv)}") from exc
    cpu = _children_cpu_s() - before
    shown = display_argv(argv)
    log_path.write_text(
        f"$ {' '.join(shown)}\n{done.stdout}\n--- stderr ---\n{done.stderr}", encoding="utf-8"
    )
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return result_from(parse_output(done.stdout), cpu, shown)


def display_argv(argv: list[str]) -> list[str]:
    """The command line without machine-local paths (wrk by name, scripts relative to bench/)."""
    out = ["wrk", *argv[1:]]
    for i, arg in enumerate(out):
        path = Path(arg)
        if path.is_absolute() and path.parent == LUA_DIR:
            out[i] = f"bench/lua/{path.name}"
    return out
