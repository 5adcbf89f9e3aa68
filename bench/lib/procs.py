"""Processes the suite starts: gateways, exchanges, servers, the load generator.

Everything runs on 127.0.0.1, logs to a file in the run's scratch directory,
is waited for by a marker in that log, and is stopped (SIGTERM, then SIGKILL)
when the scenario ends, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH_POLICY = ROOT / "bench" / "policy"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def python_env() -> dict[str, str]:
    """This checkout's ``gateway`` and ``bench`` first on the path, whatever is installed."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class Proc:
    def __init__(self, name: str, args: Sequence[str], log_path: pathlib.Path) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        with log_path.open("wb") as log_file:
            self.popen = subprocess.Popen(
                self.args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=python_env(),
                cwd=ROOT,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found

    def wait_for_event(self, name: str, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.events(name)
            if found:
                return found[0]
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            time.sleep(0.02)
        raise TimeoutError(f"{self.name}: no {name} within {timeout_s}s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Procs:
    """Starts processes and stops every one of them on exit (most recent first)."""

    def __init__(self, scratch: pathlib.Path) -> None:
        self.scratch = scratch
        self._procs: list[Proc] = []

    def start(self, name: str, args: Sequence[str]) -> Proc:
        proc = Proc(name, args, self.scratch / f"{name}.log")
        self._procs.append(proc)
        return proc

    def python(self, name: str, *args: str) -> Proc:
        return self.start(name, [sys.executable, *args])

    def stop(self, proc: Proc) -> None:
        proc.stop()
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def stop_all(self) -> None:
        while self._procs:
            self._procs.pop().stop()

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


@contextlib.contextmanager
def procs(scratch: pathlib.Path) -> Iterator[Procs]:
    group = Procs(scratch)
    try:
        yield group
    finally:
        group.stop_all()


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default), in MiB."""
    path = f"/proc/{pid or 'self'}/status"
    for line in pathlib.Path(path).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        load = os.getloadavg()
        info["loadavg_at_start"] = [round(x, 2) for x in load]
    with contextlib.suppress(Exception):
        import grpc

        info["grpcio"] = grpc.__version__
    with contextlib.suppress(Exception):
        import redis

        info["redis_py"] = redis.__version__
    with contextlib.suppress(Exception):
        import hiredis  # noqa: F401

        info["hiredis"] = True
    with contextlib.suppress(Exception):
        import uvloop

        info["uvloop"] = uvloop.__version__
    with contextlib.suppress(Exception):
        from gateway.embedded_redis import find_redis_server

        out = subprocess.run(
            [find_redis_server(), "--version"], capture_output=True, text=True, timeout=10
        )
        info["redis_server"] = out.stdout.strip()
    return info
