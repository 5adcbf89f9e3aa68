"""A private ``redis-server`` for running the gateway (and its tests) with no set-up.

It listens on 127.0.0.1 on a free port, keeps its data in its own directory
with AOF on (flags are durable across restarts of the same directory), and is
stopped when the gateway exits. Nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import time
from types import TracebackType

INSTALL_HINT = (
    "redis-server was not found on PATH. Install Redis 7 or newer "
    "(Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`), "
    "set PRETRADE_REDIS_SERVER to its path, or pass --redis-url to use a running Redis."
)


class RedisNotFoundError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_redis_server() -> str:
    configured = os.environ.get("PRETRADE_REDIS_SERVER")
    if configured:
        if not os.access(configured, os.X_OK):
            raise RedisNotFoundError(
                f"PRETRADE_REDIS_SERVER={configured} is not executable. {INSTALL_HINT}"
            )
        return configured
    found = shutil.which("redis-server")
    if found is None:
        raise RedisNotFoundError(INSTALL_HINT)
    return found


class EmbeddedRedis:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        appendonly: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log_tail = _tail(self.data_dir / "redis.log")
                raise RuntimeError(f"redis-server exited at start: {err}{log_tail}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} in {timeout_s}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: redis flushes the AOF and exits
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            with contextlib.suppress(OSError):
                process.stderr.close()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(path: pathlib.Path, lines: int = 5) -> str:
    try:
        return "\n" + "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return ""
