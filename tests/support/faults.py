"""Fault injection on this machine: redis-server processes the test owns, a TCP proxy,
and a Redis Cluster started from scratch. Only 127.0.0.1; every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from gateway.embedded_redis import EmbeddedRedis, free_port

# -- one redis-server ---------------------------------------------------------------


def _pid(server: EmbeddedRedis) -> int:
    assert server.process is not None and server.process.poll() is None, "redis is not running"
    return server.process.pid


def pause(server: EmbeddedRedis) -> None:
    """SIGSTOP: the server keeps its sockets (connects still succeed) and answers nothing."""
    os.kill(_pid(server), signal.SIGSTOP)


def resume(server: EmbeddedRedis) -> None:
    os.kill(_pid(server), signal.SIGCONT)


def kill(server: EmbeddedRedis) -> None:
    """SIGKILL, as a crash: no shutdown, connections reset, the script cache gone."""
    process = server.process
    assert process is not None
    os.kill(process.pid, signal.SIGCONT)  # a stopped process is killed all the same
    process.kill()
    process.wait(10)
    server.process = None


def restart(server: EmbeddedRedis, data_dir: pathlib.Path | None = None) -> EmbeddedRedis:
    """Start again on the same port (from its own data directory, or ``data_dir``)."""
    if data_dir is not None:
        server.data_dir = data_dir
    return server.start()


def wait_until(predicate: object, timeout_s: float = 10.0, every_s: float = 0.02) -> float:
    """Poll ``predicate()`` until true; returns the seconds it took (raises on timeout)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(every_s)
    raise TimeoutError(f"condition not met in {timeout_s}s")


async def wait_for(predicate: object, timeout_s: float = 10.0, every_s: float = 0.02) -> float:
    """:func:`wait_until` for async code (``predicate`` may be a coroutine function)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < timeout_s:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return loop.time() - started
        await asyncio.sleep(every_s)
    raise TimeoutError(f"condition not met in {timeout_s}s")


# -- a TCP proxy: pass, delay, blackhole, reset -------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; the test flips its mode at any time.

    * ``pass``: bytes flow both ways;
    * ``blackhole``: connections stay open, bytes in either direction are dropped
      (a dead link: no error, only silence);
    * ``delay_s``: every chunk waits that long before it is forwarded.

    :meth:`reset` closes every open connection (peers see a reset).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.blackhole = False
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.blackhole:
                    continue
                sink.write(chunk)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.close()
            self._writers.discard(sink)

    def reset(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(Exception):
                transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.reset()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None


# -- a Redis Cluster -------------------------------------------------------------------


@dataclass
class ClusterNode:
    server: EmbeddedRedis

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, *args: str | int, timeout_s: float = 5.0) -> Any:
        with redis.Redis(port=self.port, socket_timeout=timeout_s, decode_responses=True) as r:
            return r.execute_command(*args)


@dataclass
class Cluster:
    nodes: list[ClusterNode]
    replicas: int
    tmp: pathlib.Path
    _down: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{seeds}"

    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.port not in self._down]

    def node_for_port(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def topology(self) -> dict[int, tuple[str, int | None]]:
        """port -> ("master", None) or ("slave", master port), as a live node sees it
        (nodes flagged as failing are left out)."""
        raw = self.live()[0].call("CLUSTER", "NODES")
        ids: dict[str, int] = {}
        rows: list[list[str]] = []
        for line in str(raw).splitlines():
            cols = line.split()
            ids[cols[0]] = int(cols[1].split("@")[0].rsplit(":", 1)[1])
            rows.append(cols)
        out: dict[int, tuple[str, int | None]] = {}
        for cols in rows:
            flags = cols[2].split(",")
            if "fail" in flags or "fail?" in flags:
                continue
            port = ids[cols[0]]
            out[port] = ("master", None) if "master" in flags else ("slave", ids.get(cols[3]))
        return out

    def master_of_slot(self, slot: int) -> ClusterNode:
        for start, end, master, *_ in self.live()[0].call("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return self.node_for_port(int(master[1]))
        raise LookupError(f"no master for slot {slot}")

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        for port, (role, of) in self.topology().items():
            if role == "slave" and of == master.port:
                return self.node_for_port(port)
        raise LookupError(f"no replica of {master.port}")

    def mark_down(self, node: ClusterNode) -> None:
        self._down.add(node.port)

    def settled(self) -> bool:
        """Every live node sees the cluster OK with every slot served."""
        try:
            for node in self.live():
                info = str(node.call("CLUSTER", "INFO"))
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
        except redis.RedisError:
            return False
        return True


@contextlib.contextmanager
def redis_cluster(tmp: pathlib.Path, masters: int = 3, replicas: int = 1) -> Iterator[Cluster]:
    """``masters`` masters with ``replicas`` replicas each, AOF on, node timeout 1 s,
    created with ``redis-cli --cluster create``; every process stopped afterwards."""
    servers: list[EmbeddedRedis] = []
    try:
        for i in range(masters * (1 + replicas)):
            port = free_port()
            server = EmbeddedRedis(
                tmp / f"cluster-{i}",
                port=port,
                extra_args=(
                    "--cluster-enabled", "yes",
                    # An explicit bus port: the default (port + 10000) may be taken or too high.
                    "--cluster-port", str(free_port()),
                    "--cluster-config-file", str(tmp / f"cluster-{i}" / "nodes.conf"),
                    "--cluster-node-timeout", "1000",
                    "--cluster-replica-validity-factor", "0",
                    "--repl-ping-replica-period", "1",
                    # Replicas in sync at once (the default waits 5 s for more replicas).
                    "--repl-diskless-sync-delay", "0",
                ),
            )  # fmt: skip
            servers.append(server.start())
        addresses = [f"127.0.0.1:{s.port}" for s in servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses,
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        cluster = Cluster([ClusterNode(s) for s in servers], replicas, tmp)
        # Every node must know every slot and every replica its master before we start.
        wait_until(lambda: _converged(cluster, masters, replicas), timeout_s=30, every_s=0.1)
        yield cluster
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                if server.process is not None:
                    os.kill(server.process.pid, signal.SIGCONT)
            server.stop()


def _converged(cluster: Cluster, masters: int, replicas: int) -> bool:
    if not cluster.settled():
        return False
    topology = cluster.topology()
    roles = topology.values()
    if sum(1 for r, _ in roles if r == "master") != masters:
        return False
    if sum(1 for r, _ in roles if r == "slave") != masters * replicas:
        return False
    # Every replica holds its master's data and follows its stream.
    return all(
        cluster.node_for_port(port).call("INFO", "replication").get("master_link_status") == "up"
        for port, (role, _) in topology.items()
        if role == "slave"
    )


__all__ = [
    "Cluster",
    "ClusterNode",
    "TcpProxy",
    "free_port",
    "kill",
    "pause",
    "redis_cluster",
    "restart",
    "resume",
    "wait_for",
    "wait_until",
]
