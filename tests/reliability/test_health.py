"""Health status while Redis is away, and the flag snapshot reloaded when it is back."""

from __future__ import annotations

import pathlib

import grpc
from grpc_health.v1 import health_pb2

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.embedded_redis import EmbeddedRedis
from gateway.engine import ORDER_ENTRY_SERVICE
from gateway.reliability.health import StoreHealth
from gateway.server import ADMIN_SERVICE
from gateway.snapshot import Snapshot
from gateway.store.redis_client import hot_client
from tests.reliability.conftest import fault_settings
from tests.support.faults import kill, restart, wait_for
from tests.support.load import health_status
from tests.support.rpc import limit_order, refused
from tests.support.servers import running_gateway

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def freeze(account: str) -> apb.SetAccountStateRequest:
    return apb.SetAccountStateRequest(
        account_id=account, state=apb.ACCOUNT_STATE_FROZEN, reason="test", actor="ops"
    )


async def test_health_follows_redis_and_the_snapshot_is_reloaded(
    redis_server: EmbeddedRedis, tmp_path: pathlib.Path
) -> None:
    # Another Redis's data: bob frozen there, alice not.
    other = EmbeddedRedis(tmp_path / "other").start()
    try:
        async with running_gateway(fault_settings(other.url)) as (_, clients):
            await clients.admin.SetAccountState(freeze("bob"))
    finally:
        other.stop()  # SIGTERM: the AOF is complete

    async with running_gateway(fault_settings(redis_server.url)) as (gateway, clients):
        order = f"127.0.0.1:{gateway.order_port}"
        admin = f"127.0.0.1:{gateway.admin_port}"
        await clients.admin.SetAccountState(freeze("alice"))
        assert await health_status(order, ORDER_ENTRY_SERVICE) == SERVING

        kill(redis_server)

        async def order_entry_is(status: int) -> bool:
            return await health_status(order, ORDER_ENTRY_SERVICE) == status

        await wait_for(lambda: order_entry_is(NOT_SERVING), timeout_s=5, every_s=0.05)
        # The process is alive and the admin service answers: only order entry is degraded.
        assert await health_status(order, "") == SERVING
        assert await health_status(admin, ADMIN_SERVICE) == SERVING
        # Admin writes need Redis: UNAVAILABLE, not UNKNOWN.
        got = await refused(clients.admin.SetAccountState(freeze("carol"), timeout=5))
        assert got.code is grpc.StatusCode.UNAVAILABLE and "Redis" in got.message
        # Decisions go on from the snapshot in force.
        got = await refused(clients.orders.PlaceOrder(limit_order("alice"), timeout=5))
        assert got.reason == "ACCOUNT_FROZEN"

        restart(redis_server, data_dir=tmp_path / "other")  # same port, the other data
        await wait_for(lambda: order_entry_is(SERVING), timeout_s=10, every_s=0.05)
        await clients.orders.PlaceOrder(limit_order("alice"), timeout=5)  # no longer frozen
        got = await refused(clients.orders.PlaceOrder(limit_order("bob"), timeout=5))
        assert (got.code, got.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN")


async def test_an_unsynced_snapshot_is_degraded(redis_url: str) -> None:
    redis = hot_client(redis_url)
    snapshot = Snapshot()
    snapshot.synced = True
    health = StoreHealth(redis, snapshot, deadline_ms=200)
    heard: list[bool] = []
    health.add_listener(lambda state: heard.append(state.degraded))
    try:
        assert not (await health.check()).degraded
        snapshot.synced = False
        state = await health.check()
        assert (state.degraded, state.reason) == (True, "snapshot unsynced")
        snapshot.synced = True
        assert not (await health.check()).degraded
        assert heard == [True, False]
    finally:
        await redis.aclose()


async def test_failed_order_path_calls_degrade_until_they_stop(redis_url: str) -> None:
    redis = hot_client(redis_url)
    snapshot = Snapshot()
    snapshot.synced = True
    health = StoreHealth(redis, snapshot, deadline_ms=200)
    try:
        health.observe(False, "TimeoutError")
        assert not (await health.check()).degraded  # one is noise
        health.observe(False, "TimeoutError")
        state = await health.check()
        assert (state.degraded, state.reason) == (True, "redis: TimeoutError")
        health.observe(True)
        assert not (await health.check()).degraded
    finally:
        await redis.aclose()


async def test_a_silent_subscription_is_noticed_and_the_snapshot_reloaded(
    redis_server: EmbeddedRedis,
) -> None:
    """The follower's link goes dead without an error (a blackhole): its pings go
    unanswered, it reconnects and reloads, and a change it missed is in force after."""
    from gateway.model import FlagKind
    from gateway.store import FlagStore, SnapshotFollower, follower_client
    from tests.support.faults import TcpProxy

    proxy = await TcpProxy(redis_server.port).start()
    writer = hot_client(redis_server.url)
    reader = hot_client(redis_server.url)
    source = follower_client(proxy.url)
    snapshot = Snapshot()
    follower = SnapshotFollower(source, FlagStore(reader), snapshot)
    try:
        await follower.start()
        assert snapshot.synced and follower.reloads == 1
        proxy.blackhole = True
        fields = {"value": "3", "reason": "missed", "actor": "ops"}
        await FlagStore(writer).write(FlagKind.ACCOUNT_STATE, "carol", fields)
        await wait_for(lambda: not snapshot.synced, timeout_s=8)
        proxy.blackhole = False
        proxy.reset()
        await wait_for(lambda: snapshot.synced and follower.reloads >= 2, timeout_s=8)
        assert "carol" in snapshot.accounts
    finally:
        await follower.stop()
        await source.aclose()
        await writer.aclose()
        await reader.aclose()
        await proxy.stop()
