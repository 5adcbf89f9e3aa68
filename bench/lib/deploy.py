"""Start the servers under test as real processes, each with its real command line."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from bench.lib.procs import Proc, Procs
from gateway.embedded_redis import free_port

READY_TIMEOUT_S = 120.0


@dataclass
class Server:
    proc: Proc
    address: str
    admin_address: str = ""
    #: Every process whose CPU counts for this server (a supervisor and its workers).
    pids: list[int] = field(default_factory=list)

    def target(self) -> dict[str, object]:
        return {"address": self.address, "pids": self.pids or [self.proc.pid]}


def exchange(group: Procs, name: str = "exchange") -> Server:
    """The reference exchange alone (``pretrade-gateway exchange``): the bare server."""
    address = f"127.0.0.1:{free_port()}"
    proc = group.python(name, "-m", "gateway", "exchange", "--listen", address)
    proc.wait_for_event("exchange.ready", READY_TIMEOUT_S)
    return Server(proc, address)


def interceptor(
    group: Procs, redis_url: str, policy: pathlib.Path, name: str = "interceptor"
) -> Server:
    """The reference exchange's own server with the interceptor in it."""
    address = f"127.0.0.1:{free_port()}"
    proc = group.python(
        name, "-m", "bench.servers.interceptor",
        "--listen", address, "--redis-url", redis_url, "--policy", str(policy),
    )  # fmt: skip
    proc.wait_for_event("interceptor.ready", READY_TIMEOUT_S)
    return Server(proc, address)


def gateway(
    group: Procs,
    redis_url: str,
    policy: pathlib.Path,
    name: str = "gateway",
    upstream: str | None = None,
    workers: int = 1,
) -> Server:
    """``pretrade-gateway serve`` (the proxy), optionally with ``--workers``."""
    address = f"127.0.0.1:{free_port()}"
    admin = f"127.0.0.1:{free_port()}"
    args = [
        "-m", "gateway", "serve",
        "--listen", address,
        "--admin-listen", admin,
        "--redis-url", redis_url,
        "--policy", str(policy),
        "--auth", "off",  # the figures are of the decision without the API key check
        *(("--upstream", upstream) if upstream else ()),
        *(("--workers", str(workers)) if workers > 1 else ()),
    ]  # fmt: skip
    proc = group.python(name, *args)
    if workers > 1:
        ready = proc.wait_for_event("supervisor.ready", READY_TIMEOUT_S)
        pids = [proc.pid, *(int(p) for p in ready["pids"])]
        return Server(proc, address, admin, pids)
    proc.wait_for_event("gateway.ready", READY_TIMEOUT_S)
    return Server(proc, address, admin)
