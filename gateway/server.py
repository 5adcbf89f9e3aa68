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
from gateway.embedded_redis import EmbeddedRedis
from gateway.engine import ORDER_ENTRY_SERVICE, Gatekeeper
from gateway.exchange import ReferenceExchange, add_to_server
from gateway.policy import load_policy
from gateway.proxy import OrderEntryProxy
from gateway.settings import Settings

log = structlog.get_logger("gateway.server")

ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
MAX_MESSAGE_BYTES = 64 * 1024
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
        policy = load_policy(settings.policy)
        redis_url = settings.redis_url
        if redis_url is None:
            self.redis = EmbeddedRedis(settings.redis_dir)
            await asyncio.to_thread(self.redis.start)
            redis_url = self.redis.url
            log.info("redis.embedded", url=redis_url, data_dir=str(settings.redis_dir))
        self.keeper = await Gatekeeper.open(redis_url, policy)

        upstream = settings.upstream
        if upstream is None:
            upstream = await self._start_reference_exchange()
        channel = aio.insecure_channel(upstream)
        self._channels.append(channel)

        options = REUSEPORT_SERVER_OPTIONS if settings.reuse_port else SERVER_OPTIONS
        order_server = aio.server(options=options)
        order_server.add_generic_rpc_handlers(
            (OrderEntryProxy(self.keeper.engine, channel).handler(),)
        )
        await add_health_and_reflection(order_server, (ORDER_ENTRY_SERVICE,))
        self.order_port = _bind(order_server, settings.listen)
        self._servers.append(order_server)

        admin_server = aio.server(options=options)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(self.keeper), admin_server)
        await add_health_and_reflection(admin_server, (ADMIN_SERVICE,))
        self.admin_port = _bind(admin_server, settings.admin_listen)
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
        )

    async def _start_reference_exchange(self) -> str:
        self.exchange = ReferenceExchange()
        server = aio.server()
        add_to_server(server, self.exchange)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._servers.append(server)
        log.info("exchange.embedded", address=f"127.0.0.1:{port}")
        return f"127.0.0.1:{port}"

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.settings.grace_s if grace_s is None else grace_s
        # Order entry and admin first, the in-process exchange (started first) last.
        for server in reversed(self._servers):
            await server.stop(grace)
        self._servers.clear()
        for channel in self._channels:
            await channel.close(None)
        self._channels.clear()
        if self.keeper is not None:
            await self.keeper.close()
            self.keeper = None
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
        log.info("gateway.stopping")
        await gateway.stop()
        log.info("gateway.stopped")


def _bind(server: aio.Server, address: str) -> int:
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def _address(configured: str, port: int) -> str:
    host = configured.rsplit(":", 1)[0]
    return f"{host}:{port}"


__all__ = ["Gateway", "add_health_and_reflection", "serve"]
