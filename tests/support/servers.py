"""Real servers for tests: a private redis-server, in-process gateways, gateway processes."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace

import grpc
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2_grpc, order_entry_pb2_grpc
from gateway.client import open_channel
from gateway.embedded_redis import EmbeddedRedis, free_port
from gateway.server import Gateway
from gateway.settings import Settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
POLICY = ROOT / "limits"


@dataclass
class Clients:
    orders: order_entry_pb2_grpc.OrderEntryAsyncStub
    admin: admin_pb2_grpc.AdminAsyncStub
    channels: tuple[aio.Channel, ...]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)


async def connect(
    order_address: str,
    admin_address: str,
    *,
    api_key: str | None = None,
    admin_token: str | None = None,
) -> Clients:
    order_channel = open_channel(order_address, bearer=api_key)
    admin_channel = open_channel(admin_address, bearer=admin_token)
    return Clients(
        orders=order_entry_pb2_grpc.OrderEntryStub(order_channel),  # type: ignore[arg-type]
        admin=admin_pb2_grpc.AdminStub(admin_channel),  # type: ignore[arg-type]
        channels=(order_channel, admin_channel),
    )


def test_settings(redis_url: str, **overrides: object) -> Settings:
    """Settings for an in-process gateway. Authentication is off unless a test turns it on
    (``auth=True``, with ``admin_token_file`` in its own tmp directory)."""
    base = Settings(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        redis_url=redis_url,
        policy=POLICY,
        grace_s=0.5,
        auth=False,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[tuple[Gateway, Clients]]:
    gateway = await Gateway.start(settings)
    clients = await connect(f"127.0.0.1:{gateway.order_port}", f"127.0.0.1:{gateway.admin_port}")
    try:
        yield gateway, clients
    finally:
        await clients.close()
        await gateway.stop(grace_s=0.2)


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    order_address: str
    admin_address: str
    log_path: pathlib.Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextlib.contextmanager
def gateway_process(
    redis_url: str,
    tmp: pathlib.Path,
    *extra: str,
    upstream: str | None = None,
    auth: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[GatewayProcess]:
    """A gateway in its own OS process (``python -m gateway serve``), ready when yielded.

    ``auth=False`` passes ``--auth off``; with ``auth=True`` the admin token file
    goes to ``tmp`` (``XDG_STATE_HOME``) unless ``extra`` says otherwise.
    """
    order_port, admin_port = free_port(), free_port()
    log_path = tmp / f"gateway-{order_port}.log"
    args = [
        sys.executable, "-m", "gateway", "serve",
        "--listen", f"127.0.0.1:{order_port}",
        "--admin-listen", f"127.0.0.1:{admin_port}",
        "--redis-url", redis_url,
        "--policy", str(POLICY),
        *(("--upstream", upstream) if upstream else ()),
        *(() if auth else ("--auth", "off")),
        *extra,
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XDG_STATE_HOME": str(tmp / "state"),
        **(env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
    handle = GatewayProcess(process, f"127.0.0.1:{order_port}", f"127.0.0.1:{admin_port}", log_path)
    try:
        _wait_ready(handle)
        yield handle
    finally:
        handle.stop()


def _wait_ready(handle: GatewayProcess, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{handle.log()}")
        if "gateway.ready" in handle.log():
            return
        time.sleep(0.05)
    raise TimeoutError(f"gateway not ready in {timeout_s}s:\n{handle.log()}")


def start_redis(tmp: pathlib.Path, name: str = "redis") -> EmbeddedRedis:
    return EmbeddedRedis(tmp / name).start()


def grpc_error_code(exc: BaseException) -> grpc.StatusCode | None:
    return exc.code() if isinstance(exc, aio.AioRpcError) else None


@dataclass
class InterceptorDeployment:
    """An exchange's own server (the reference exchange's servicer) guarded by the interceptor."""

    keeper: object
    exchange: object
    clients: Clients
    order_address: str = ""
    admin_address: str = ""


@contextlib.asynccontextmanager
async def running_interceptor(
    redis_url: str,
    policy: pathlib.Path = POLICY,
    trusted_proxy_header: str | None = None,
    exchange: object | None = None,
    *,
    auth: bool = False,
    admin_tokens: dict[str, str] | None = None,
) -> AsyncIterator[InterceptorDeployment]:
    """The interceptor deployment; with ``auth`` the same checks as ``serve`` (API keys on
    the order port, ``admin_tokens`` on the admin port)."""
    from gateway import Gatekeeper, PreTradeInterceptor, load_policy
    from gateway.admin import AdminService
    from gateway.admin_auth import AdminCredentials, AdminGuard
    from gateway.exchange import ReferenceExchange, add_to_server

    keeper = await Gatekeeper.open(
        redis_url, load_policy(policy), trusted_proxy_header=trusted_proxy_header, auth=auth
    )
    if exchange is None:
        exchange = ReferenceExchange()
    assert isinstance(exchange, ReferenceExchange)
    order_server = aio.server(interceptors=[PreTradeInterceptor(keeper.engine)])
    add_to_server(order_server, exchange)
    order_port = order_server.add_insecure_port("127.0.0.1:0")
    admin_server = aio.server(
        interceptors=[AdminGuard(AdminCredentials(admin_tokens or {}) if auth else None)]
    )
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(keeper), admin_server)
    admin_port = admin_server.add_insecure_port("127.0.0.1:0")
    await order_server.start()
    await admin_server.start()
    # Reference prices from the exchange's own execution feed, as an embedding venue would.
    keeper.follow_executions(f"127.0.0.1:{order_port}")
    clients = await connect(f"127.0.0.1:{order_port}", f"127.0.0.1:{admin_port}")
    try:
        yield InterceptorDeployment(
            keeper, exchange, clients, f"127.0.0.1:{order_port}", f"127.0.0.1:{admin_port}"
        )
    finally:
        await clients.close()
        await keeper.stop_following_executions()
        await order_server.stop(0.2)
        await admin_server.stop(0.2)
        await keeper.close()
