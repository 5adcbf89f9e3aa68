"""Soak: a gateway process under steady load (with Redis blips) keeps memory and connections flat.

The short run (10 s, one blip) is in the default suite; the long one (2 minutes, a
blip every 20 s) runs with ``pytest -m soak tests/reliability/test_soak.py``. The
exchange runs in a process of its own, so only the gateway is measured: its
resident memory, its open file descriptors and sockets, and the connections
Redis sees, sampled every half second while the load runs (not just after
Redis blips, when timed-out connections are being replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.embedded_redis import EmbeddedRedis, free_port
from tests.reliability.conftest import DEADLINE_MS
from tests.support.faults import pause, resume
from tests.support.load import Driver, Outcome, set_limit, timed
from tests.support.rpc import limit_order
from tests.support.servers import ROOT, connect, gateway_process

#: Allowed growth from the warmed-up baseline to the end of the run.
RSS_SLACK_MB = 12.0
FD_SLACK = 12
REDIS_CLIENTS_SLACK = 8


@dataclass(frozen=True)
class Sample:
    at: float
    rss_mb: float
    fds: int
    sockets: int
    redis_clients: int


def _rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> tuple[int, int]:
    fds = sockets = 0
    for entry in os.scandir(f"/proc/{pid}/fd"):
        fds += 1
        with contextlib.suppress(OSError):
            if os.readlink(entry.path).startswith("socket:"):
                sockets += 1
    return fds, sockets


@contextlib.contextmanager
def exchange_process(tmp: pathlib.Path) -> Iterator[str]:
    port = free_port()
    log = (tmp / "exchange.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "exchange", "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "exchange.ready" not in (tmp / "exchange.log").read_text():
            assert process.poll() is None and time.monotonic() < deadline, "exchange did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def soak(
    redis_server: EmbeddedRedis, tmp: pathlib.Path, duration_s: float, blip_every_s: float
) -> tuple[list[Sample], list[Outcome]]:
    with (
        exchange_process(tmp) as upstream,
        gateway_process(
            redis_server.url, tmp, "--redis-timeout-ms", str(DEADLINE_MS), upstream=upstream
        ) as gateway,
    ):
        pid = gateway.process.pid
        clients = await connect(gateway.order_address, gateway.admin_address)
        watcher = aioredis.Redis.from_url(redis_server.url)
        try:
            await set_limit(clients, apb.LIMIT_KIND_ORDER_RATE, "200/1s")
            await set_limit(clients, apb.LIMIT_KIND_CANCEL_RATE, "200/1s")
            await set_limit(clients, apb.LIMIT_KIND_MIN_RESTING, "1ms")

            async def cycle(n: int) -> Outcome:
                """Place (sometimes refused by the rate), amend, cancel: the book stays small."""
                account = f"soak-{n % 7}"
                placed = await timed(
                    "place",
                    clients.orders.PlaceOrder(
                        limit_order(account, client_order_id=f"S{n}"), timeout=10
                    ),
                )
                if placed.ok:
                    await asyncio.sleep(0.002)  # past the resting time
                    amend = pb.AmendOrderRequest(
                        account_id=account, symbol="BTC-USDT", client_order_id=f"S{n}", price="99"
                    )
                    await timed("amend", clients.orders.AmendOrder(amend, timeout=10))
                    cancel = pb.CancelOrderRequest(
                        account_id=account, symbol="BTC-USDT", client_order_id=f"S{n}"
                    )
                    await timed("cancel", clients.orders.CancelOrder(cancel, timeout=10))
                return placed

            driver = Driver(
                cycle, workers=8, pause_s=0.0, max_calls=10**6, max_s=duration_s + 30
            ).start()
            samples: list[Sample] = []
            started = time.monotonic()
            next_blip = started + blip_every_s
            blips: list[float] = []
            try:
                while (now := time.monotonic()) < started + duration_s:
                    if now >= next_blip:
                        pause(redis_server)
                        await asyncio.sleep(0.6)
                        resume(redis_server)
                        blips.append(time.monotonic())
                        next_blip += blip_every_s
                    await asyncio.sleep(0.5)
                    if blips and time.monotonic() - blips[-1] < 2.0:
                        continue  # connections given up during the blip are being replaced
                    fds, sockets = _fds(pid)
                    info = await watcher.info("clients")
                    samples.append(
                        Sample(
                            time.monotonic() - started,
                            _rss_mb(pid),
                            fds,
                            sockets,
                            int(info["connected_clients"]) - 1,  # not the watcher itself
                        )
                    )
            finally:
                outcomes = await driver.stop()
            assert gateway.process.poll() is None, "the gateway exited"
        finally:
            await watcher.aclose()
            await clients.close()
    return samples, outcomes


def check_flat(samples: list[Sample], outcomes: list[Outcome], warmup_s: float) -> None:
    warm = [s for s in samples if s.at >= warmup_s]
    assert len(warm) >= 4, samples
    base, rest = warm[: max(2, len(warm) // 4)], warm[max(2, len(warm) // 4) :]
    base_rss = statistics.median(s.rss_mb for s in base)
    base_fds = max(s.fds for s in base)
    base_clients = max(s.redis_clients for s in base)
    top_rss = max(s.rss_mb for s in rest)
    top_fds = max(s.fds for s in rest)
    top_clients = max(s.redis_clients for s in rest)
    places = [o for o in outcomes if o.kind == "place"]
    print(
        f"{len(places)} places, {sum(o.ok for o in places)} admitted; "
        f"rss {base_rss:.1f} -> {top_rss:.1f} MB, fds {base_fds} -> {top_fds}, "
        f"redis clients {base_clients} -> {top_clients}, {len(samples)} samples"
    )
    assert len(places) > 100
    assert top_rss <= base_rss + RSS_SLACK_MB, samples
    assert top_fds <= base_fds + FD_SLACK, samples
    assert top_clients <= base_clients + REDIS_CLIENTS_SLACK, samples
    reasons = {o.reason for o in places}
    assert reasons <= {"", "ORDER_RATE_EXCEEDED", "STORE_UNAVAILABLE"}, reasons


async def test_short_soak(redis_server: EmbeddedRedis, tmp_path: pathlib.Path) -> None:
    samples, outcomes = await soak(redis_server, tmp_path, duration_s=10.0, blip_every_s=5.0)
    check_flat(samples, outcomes, warmup_s=2.0)


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_long_soak(redis_server: EmbeddedRedis, tmp_path: pathlib.Path) -> None:
    samples, outcomes = await soak(redis_server, tmp_path, duration_s=120.0, blip_every_s=20.0)
    check_flat(samples, outcomes, warmup_s=10.0)
    # And no trend: the last third no higher than the second (a leak keeps climbing).
    third = len(samples) // 3
    middle = statistics.median(s.rss_mb for s in samples[third : 2 * third])
    last = statistics.median(s.rss_mb for s in samples[2 * third :])
    assert last <= middle + RSS_SLACK_MB / 2, samples
