"""One frozen settings object for ``serve``, from flags with ``PRETRADE_*`` environment twins."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass


def default_state_dir() -> pathlib.Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return pathlib.Path(base) / "pretrade-gateway"


@dataclass(frozen=True, slots=True)
class Settings:
    #: Order-entry (OrderEntry) address.
    listen: str = "127.0.0.1:50051"
    #: Admin address (Admin service); never the order-entry port.
    admin_listen: str = "127.0.0.1:50052"
    #: Redis to use; None starts a private redis-server.
    redis_url: str | None = None
    #: Data directory of the private redis-server (AOF on).
    redis_dir: pathlib.Path = default_state_dir() / "redis"
    #: Upstream order-entry service; None runs the reference exchange in-process.
    upstream: str | None = None
    #: Policy file or directory.
    policy: pathlib.Path = pathlib.Path("limits")
    log_level: str = "info"
    #: Seconds given to in-flight calls on shutdown.
    grace_s: float = 5.0
    #: Gateway processes sharing the ports (``serve --workers``); 1 runs in this process.
    workers: int = 1
    #: Bind with SO_REUSEPORT, so that several workers can share the ports.
    reuse_port: bool = False
