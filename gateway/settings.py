"""One frozen settings object for ``serve``, from flags with ``PRETRADE_*`` environment twins."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field

from gateway.reliability.failure import DEFAULT_DEADLINE_MS, DEFAULT_FAIL_OPEN, Operation
from gateway.reliability.idempotency import DEFAULT_WINDOW_MS


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
    #: Prometheus endpoint HOST:PORT; None: no endpoint.
    metrics_listen: str | None = None
    #: Names this gateway in audit records and metrics; "" for host:pid.
    instance: str = ""
    #: Accepted orders in the audit trail: 1 every one, N one in N, 0 none.
    audit_accept_every: int = 1
    #: Approximate bound on the decision stream's length (0: none).
    audit_max_len: int = 1_000_000
    #: Approximate bound on the age of decision records in ms (0: none).
    audit_max_age_ms: int = 0
    #: Refusal log lines a second at most (0: none); the audit trail records every call.
    refusal_log_per_s: int = 100
    #: Take clients' IP addresses from this request header (its last address), set by a
    #: trusted proxy in front of the gateway; None: the connection's peer address.
    trusted_proxy_header: str | None = None
    #: Deadline of a Redis call on the order path (ms); past it the failure policy decides.
    redis_timeout_ms: int = DEFAULT_DEADLINE_MS
    #: Operations let through (uncounted) while Redis is unavailable; the others are refused.
    fail_open: frozenset[Operation] = field(default=DEFAULT_FAIL_OPEN)
    #: A PlaceOrder retried (same account, client_order_id) within this is not counted
    #: again (ms; 0: off).
    idempotency_window_ms: int = DEFAULT_WINDOW_MS
    #: Order entry needs an API key; False is for local development only.
    auth: bool = True
    #: Admin token (``--admin-token``); when set, the token file is not read.
    admin_token: str | None = None
    #: Admin tokens, one per line (``TOKEN`` or ``NAME TOKEN``); generated when missing
    #: unless admin client certificates are configured.
    admin_token_file: pathlib.Path = default_state_dir() / "admin-token"
    #: TLS on the order-entry port: certificate chain and key (PEM); with a client CA,
    #: clients must present a certificate it signed (mutual TLS).
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    tls_client_ca: pathlib.Path | None = None
    #: The same for the admin port; there a client certificate with OU=pretrade-admin
    #: is an admin credential.
    admin_tls_cert: pathlib.Path | None = None
    admin_tls_key: pathlib.Path | None = None
    admin_tls_client_ca: pathlib.Path | None = None
    #: Gateway processes sharing the ports (``serve --workers``); 1 runs in this process.
    workers: int = 1
    #: Bind with SO_REUSEPORT, so that several workers can share the ports.
    reuse_port: bool = False
