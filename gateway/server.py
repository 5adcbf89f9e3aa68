"""Wiring for ``pretrade-gateway serve``: Redis, upstream, the two gRPC servers.

Everything is assembled here and nowhere else. With no ``redis_url`` a
private redis-server is started; with no ``upstream`` the reference exchange
runs in this process on a loopback port of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence

import structlog
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from gateway._generated.pretrade.v1 import admin_pb2, admin_pb2_grpc
from gateway.admin import AdminService
from gateway.admin_auth import AdminGuard, admin_credentials
from gateway.audit import AuditConfig
from gateway.embedded_redis import EmbeddedRedis
from gateway.engine import ORDER_ENTRY_SERVICE, Gatekeeper
from gateway.exchange import ReferenceExchange, add_to_server
from gateway.ops import OpsConfig
from gateway.policy import load_policy
from gateway.proxy import OrderEntryProxy
from gateway.reliability.admin_errors import StoreUnavailableInterceptor
from gateway.reliability.failure import FailurePolicy
from gateway.reliability.health import grpc_health_listener
from gateway.reliability.shutdown import Hook
from gateway.settings import Settings
from gateway.tls import ServerTLS, bind

log = structlog.get_logger("gateway.server")

ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
MAX_MESSAGE_BYTES = 64 * 1024
#: How long start-up waits for the upstream's execution feed (then serves anyway).
FEED_WAIT_S = 5.0
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_metadata_size", 16 * 1024),
    ("grpc.so_reuseport", 0),
)
#: For ``serve --workers``: every worker binds the same ports, the kernel spreads connections.
REUSEPORT_SERVER_OPTIONS = (*SERVER_OPTIONS[:-1], ("grpc.so_reuseport", 1))


async def add_health_and_reflection(server: aio.Server, services: Sequence[str]) -> HealthServicer:
    """Standard gRPC health checking (all ``services`` SERVING) and server reflection."""
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", *services):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return servicer


class Gateway:
    """A running gateway. ``await Gateway.start(settings)``, then :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: EmbeddedRedis | None = None
        self.keeper: Gatekeeper | None = None
        self.exchange: ReferenceExchange | None = None
        self.order_port = 0
        self.admin_port = 0
        self._servers: list[aio.Server] = []
        self._exchange_server: aio.Server | None = None
        self._health: list[HealthServicer] = []
        self._channels: list[aio.Channel] = []

    @classmethod
    async def start(cls, settings: Settings) -> Gateway:
        gateway = cls(settings)
        try:
            await gateway._start()
        except BaseException:
            await gateway.stop(grace_s=0)
            raise
        return gateway

    async def _start(self) -> None:
        settings = self.settings
        order_tls = ServerTLS.from_paths(
            "order entry", settings.tls_cert, settings.tls_key, settings.tls_client_ca
        )
        admin_tls = ServerTLS.from_paths(
            "admin", settings.admin_tls_cert, settings.admin_tls_key, settings.admin_tls_client_ca
        )
        # Read certificates and tokens before anything starts: bad files stop the start at once.
        order_credentials = order_tls.credentials() if order_tls else None
        admin_tls_credentials = admin_tls.credentials() if admin_tls else None
        credentials = None
        if settings.auth:
            credentials = admin_credentials(
                settings.admin_token, settings.admin_token_file, settings.admin_tls_client_ca
            )
        admin_interceptors = [AdminGuard(credentials)]
        policy = load_policy(settings.policy)
        redis_url = settings.redis_url
        if redis_url is None:
            self.redis = EmbeddedRedis(settings.redis_dir)
            await asyncio.to_thread(self.redis.start)
            redis_url = self.redis.url
            log.info("redis.embedded", url=redis_url, data_dir=str(settings.redis_dir))
        self.keeper = await Gatekeeper.open(
            redis_url,
            policy,
            ops=ops_config(settings),
            trusted_proxy_header=settings.trusted_proxy_header,
            failure=FailurePolicy(settings.redis_timeout_ms, settings.fail_open),
            idempotency_window_ms=settings.idempotency_window_ms,
            auth=settings.auth,
        )

        upstream = settings.upstream
        if upstream is None:
            upstream = await self._start_reference_exchange()
        channel = aio.insecure_channel(upstream)
        self._channels.append(channel)
        feed = self.keeper.follow_executions(upstream)
        # Serve once self-trade prevention has read the linked accounts' resting orders
        # (or the upstream has answered that it cannot): a restart must not open a gap.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FEED_WAIT_S):
                await feed.attempted.wait()

        options = REUSEPORT_SERVER_OPTIONS if settings.reuse_port else SERVER_OPTIONS
        order_server = aio.server(options=options)
        order_server.add_generic_rpc_handlers(
            (OrderEntryProxy(self.keeper.engine, channel).handler(),)
        )
        order_health = await add_health_and_reflection(order_server, (ORDER_ENTRY_SERVICE,))
        # Order entry is NOT_SERVING while degraded (Redis away, snapshot unsynced).
        follow_health = grpc_health_listener(order_health, (ORDER_ENTRY_SERVICE,))
        await follow_health(self.keeper.health.state)
        self.keeper.health.add_listener(follow_health)
        self._health.append(order_health)
        self.order_port = bind(order_server, settings.listen, order_credentials)
        self._servers.append(order_server)

        admin_server = aio.server(
            options=options,
            interceptors=[*admin_interceptors, StoreUnavailableInterceptor()],
        )
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(self.keeper), admin_server)
        self._health.append(await add_health_and_reflection(admin_server, (ADMIN_SERVICE,)))
        self.admin_port = bind(admin_server, settings.admin_listen, admin_tls_credentials)
        self._servers.append(admin_server)

        for server in self._servers:
            await server.start()
        log.info(
            "gateway.ready",
            order_entry=_address(settings.listen, self.order_port),
            admin=_address(settings.admin_listen, self.admin_port),
            upstream=upstream,
            policy=str(settings.policy),
            policy_version=policy.version,
            symbols=len(self.keeper.snapshot.symbols),
            metrics=_address(settings.metrics_listen, self.metrics_port)
            if settings.metrics_listen
            else None,
            instance=self.keeper.ops.instance,
            self_trade_ready=self.keeper.own_orders.ready.is_set(),
            auth="on" if settings.auth else "OFF",
            order_tls="mtls" if order_tls and order_tls.client_ca else bool(order_tls),
            admin_tls="mtls" if admin_tls and admin_tls.client_ca else bool(admin_tls),
        )
        for name, address, tls in (
            ("order entry", settings.listen, order_tls),
            ("admin", settings.admin_listen, admin_tls),
        ):
            if tls is None and not _loopback(address):
                log.warning(
                    "tls.off",
                    port=name,
                    address=address,
                    message="credentials cross the network in clear: give this port TLS",
                )

    @property
    def metrics_port(self) -> int:
        """The Prometheus endpoint's port (0 when not serving one)."""
        return self.keeper.ops.metrics_port if self.keeper is not None else 0

    async def _start_reference_exchange(self) -> str:
        self.exchange = ReferenceExchange()
        server = aio.server()
        add_to_server(server, self.exchange)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._exchange_server = server
        log.info("exchange.embedded", address=f"127.0.0.1:{port}")
        return f"127.0.0.1:{port}"

    def add_shutdown_hook(self, name: str, hook: Hook, timeout_s: float = 5.0) -> None:
        """Run ``await hook()`` on shutdown once the calls in flight are done, before Redis
        is closed (e.g. flush an audit buffer). Bounded by ``timeout_s``; failures are logged."""
        if self.keeper is None:
            raise RuntimeError("the gateway is not running")
        self.keeper.shutdown_hooks.add(name, hook, timeout_s)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING, stop accepting, let calls in flight finish
        (up to the grace), run the shutdown hooks, then let go of Redis and the upstream."""
        grace = self.settings.grace_s if grace_s is None else grace_s
        for servicer in self._health:
            await servicer.enter_graceful_shutdown()
        self._health.clear()
        if self.keeper is not None:
            # The price feed's stream would otherwise hold the upstream's shutdown grace.
            await self.keeper.stop_following_executions()
        # Order entry and admin together: both stop accepting at once, then drain.
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
        self._servers.clear()
        if self.keeper is not None:
            await self.keeper.close()  # shutdown hooks first, Redis still connected
            self.keeper = None
        # The in-process exchange (started first) last: calls in flight still used it.
        if self._exchange_server is not None:
            await self._exchange_server.stop(grace)
            self._exchange_server = None
        for channel in self._channels:
            await channel.close(None)
        self._channels.clear()
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
            self.redis = None


async def serve(settings: Settings, on_ready: Callable[[Gateway], None] | None = None) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully.

    With ``settings.workers > 1`` this process supervises that many gateway
    processes instead (:mod:`gateway.workers`).
    """
    if settings.workers > 1:
        from gateway.workers import supervise

        await supervise(settings)
        return
    gateway = await Gateway.start(settings)
    if on_ready is not None:
        on_ready(gateway)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("gateway.stopping", grace_s=settings.grace_s)
        await gateway.stop()
        log.info("gateway.stopped")


def ops_config(settings: Settings) -> OpsConfig:
    return OpsConfig(
        instance=settings.instance,
        metrics_listen=settings.metrics_listen,
        refusal_log_per_s=settings.refusal_log_per_s,
        audit=AuditConfig(
            accept_every=settings.audit_accept_every,
            max_len=settings.audit_max_len,
            max_age_ms=settings.audit_max_age_ms,
        ),
    )


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _address(configured: str, port: int) -> str:
    host = configured.rsplit(":", 1)[0]
    return f"{host}:{port}"


__all__ = ["Gateway", "add_health_and_reflection", "ops_config", "serve"]
