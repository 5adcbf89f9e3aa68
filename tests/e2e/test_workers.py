"""``serve --workers``: several gateway processes on one port under one supervisor."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import admin_pb2_grpc, order_entry_pb2_grpc
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.embedded_redis import free_port
from tests.support.rpc import limit_order
from tests.support.servers import POLICY, ROOT

pytestmark = pytest.mark.slow

CONNECTIONS = 16


@dataclass
class Supervisor:
    process: subprocess.Popen[bytes]
    order_address: str
    admin_address: str
    log_path: pathlib.Path

    def events(self, name: str) -> list[dict[str, object]]:
        found = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found

    def wait_for(
        self, name: str, count: int = 1, timeout_s: float = 30.0
    ) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                raise RuntimeError(f"supervisor exited:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise TimeoutError(f"no {name} in {timeout_s}s:\n{self.log_path.read_text()}")

    def worker_pids(self) -> list[int]:
        pids = self.wait_for("supervisor.ready")[0]["pids"]
        assert isinstance(pids, list)
        return [int(pid) for pid in pids]


@contextlib.contextmanager
def supervisor(tmp_path: pathlib.Path, workers: int, *extra: str) -> Iterator[Supervisor]:
    order_port, admin_port = free_port(), free_port()
    log_path = tmp_path / "supervisor.log"
    args = [
        sys.executable, "-m", "gateway", "serve",
        "--workers", str(workers),
        "--listen", f"127.0.0.1:{order_port}",
        "--admin-listen", f"127.0.0.1:{admin_port}",
        "--redis-dir", str(tmp_path / "redis"),
        "--policy", str(POLICY),
        "--auth", "off",  # this test is about the workers; tests/e2e/test_auth*.py cover keys
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
    handle = Supervisor(process, f"127.0.0.1:{order_port}", f"127.0.0.1:{admin_port}", log_path)
    try:
        handle.wait_for("supervisor.ready")
        yield handle
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def scrape_instance(address: str) -> str:
    """The ``instance`` label of ``pretrade_gateway_info`` on the metrics endpoint."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'pretrade_gateway_info\{[^}]*instance="([^"]+)"', text)
    assert found is not None, text[:500]
    return found.group(1)


def order_channels(address: str, count: int) -> list[aio.Channel]:
    # A private subchannel pool per channel: one TCP connection each, so the kernel
    # can hand them to different workers.
    return [
        aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]


async def place_on_each(channels: list[aio.Channel], account: str) -> list[grpc.StatusCode]:
    codes = []
    for channel in channels:
        stub = order_entry_pb2_grpc.OrderEntryStub(channel)  # type: ignore[no-untyped-call]
        try:
            order = limit_order(account, time_in_force=pb.TIME_IN_FORCE_IOC)
            await stub.PlaceOrder(order, timeout=5)
            codes.append(grpc.StatusCode.OK)
        except aio.AioRpcError as exc:
            codes.append(exc.code())
    return codes


def established_connections(pid: int, port: int) -> int:
    """TCP connections on local ``port`` whose socket is held by process ``pid``."""
    inodes = set()
    for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in pathlib.Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


async def test_workers_share_the_ports_and_enforce_the_same_flags(tmp_path: pathlib.Path) -> None:
    with supervisor(tmp_path, 2, "--metrics-listen", "127.0.0.1:0") as sup:
        pids = sup.worker_pids()
        assert len(set(pids)) == 2
        # Each worker serves its own metrics: a scrape sees one process's counters.
        metrics = sup.wait_for("supervisor.ready")[0]["metrics"]
        assert isinstance(metrics, list) and len(set(metrics)) == 2
        instances = {scrape_instance(str(address)) for address in metrics}
        assert instances == {f"{socket.gethostname()}:{pid}" for pid in pids}
        channels = order_channels(sup.order_address, CONNECTIONS)
        admin_channel = aio.insecure_channel(sup.admin_address)
        try:
            assert await place_on_each(channels, "alice") == [grpc.StatusCode.OK] * CONNECTIONS
            port = int(sup.order_address.rsplit(":", 1)[1])
            per_worker = [established_connections(pid, port) for pid in pids]
            assert sum(per_worker) == CONNECTIONS
            assert all(n > 0 for n in per_worker), per_worker

            admin = admin_pb2_grpc.AdminStub(admin_channel)  # type: ignore[no-untyped-call]
            await admin.SetAccountState(
                apb.SetAccountStateRequest(
                    account_id="alice",
                    state=apb.ACCOUNT_STATE_FROZEN,
                    reason="test",
                    actor="ops",
                ),
                timeout=5,
            )
            # The worker that took the admin call enforces at once, the other by pub/sub.
            deadline = time.monotonic() + 5.0
            codes = await place_on_each(channels, "alice")
            while time.monotonic() < deadline and set(codes) != {
                grpc.StatusCode.FAILED_PRECONDITION
            }:
                codes = await place_on_each(channels, "alice")
            assert set(codes) == {grpc.StatusCode.FAILED_PRECONDITION}
            assert await place_on_each(channels, "bob") == [grpc.StatusCode.OK] * CONNECTIONS
        finally:
            for channel in (*channels, admin_channel):
                await channel.close(None)


async def test_supervisor_restarts_a_dead_worker_and_stops_them_all(
    tmp_path: pathlib.Path,
) -> None:
    with supervisor(tmp_path, workers=2) as sup:
        pids = sup.worker_pids()
        os.kill(pids[0], signal.SIGKILL)
        restarted = sup.wait_for("worker.restarted", timeout_s=30.0)[0]
        new_pid = int(str(restarted["pid"]))
        assert new_pid not in pids
        assert sup.events("worker.exited")[0]["pid"] == pids[0]

        channels = order_channels(sup.order_address, CONNECTIONS)
        try:
            assert await place_on_each(channels, "carol") == [grpc.StatusCode.OK] * CONNECTIONS
        finally:
            for channel in channels:
                await channel.close(None)

        sup.process.send_signal(signal.SIGTERM)
        assert sup.process.wait(20) == 0
        assert not [pid for pid in (pids[1], new_pid) if _running(pid)]
        assert sup.events("supervisor.stopped")


def _running(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return " Z " not in stat
