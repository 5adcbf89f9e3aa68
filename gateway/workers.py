"""``serve --workers N``: N gateway processes on the same ports, under one supervisor.

Each worker is a whole gateway (its own snapshot, follower, Redis clients and
gRPC servers) bound with SO_REUSEPORT, so the kernel spreads incoming
connections over the workers. Workers agree on flags the way gateways on
different hosts do: through Redis and its change channel. The supervisor (the
process started by ``serve``) starts what the workers share (the private
redis-server and the reference exchange, unless ``--redis-url`` and
``--upstream`` are given), restarts a worker that dies, and stops them all on
SIGINT or SIGTERM. It serves no calls itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

import structlog

from gateway.embedded_redis import EmbeddedRedis, free_port
from gateway.policy import load_policy
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.exchange import ExchangeServer

log = structlog.get_logger("gateway.workers")

READY_TIMEOUT_S = 30.0
_WATCH_EVERY_S = 0.2
_RESTART_BACKOFF_MIN_S = 0.5
_RESTART_BACKOFF_MAX_S = 10.0
#: A worker that ran at least this long before dying is restarted without delay.
_STABLE_AFTER_S = 10.0


class WorkerError(RuntimeError):
    """A worker could not be started."""


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    started_at: float
    backoff_s: float = _RESTART_BACKOFF_MIN_S


async def supervise(settings: Settings) -> None:
    """Run ``settings.workers`` gateway processes until SIGINT or SIGTERM."""
    load_policy(settings.policy)  # a broken policy fails here, once, not in every worker
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    context = multiprocessing.get_context("spawn")
    redis: EmbeddedRedis | None = None
    exchange: ExchangeServer | None = None
    workers: list[_Worker] = []
    try:
        redis_url = settings.redis_url
        if redis_url is None:
            redis = EmbeddedRedis(settings.redis_dir)
            await asyncio.to_thread(redis.start)
            redis_url = redis.url
            log.info("redis.embedded", url=redis_url, data_dir=str(settings.redis_dir))
        upstream = settings.upstream
        if upstream is None:
            from gateway.exchange import start_exchange_server

            exchange = await start_exchange_server("127.0.0.1:0")
            upstream = f"127.0.0.1:{exchange.port}"
            log.info("exchange.embedded", address=upstream)
        shared = replace(
            settings,
            workers=1,
            reuse_port=True,
            redis_url=redis_url,
            upstream=upstream,
            listen=_with_fixed_port(settings.listen),
            admin_listen=_with_fixed_port(settings.admin_listen),
        )
        shared_metrics = _metrics_addresses(settings.metrics_listen, settings.workers)
        pipes = []
        for index in range(settings.workers):
            worker, ready = _spawn(context, shared, index, shared_metrics)
            workers.append(worker)
            pipes.append(ready)
        for worker, ready in zip(workers, pipes, strict=True):
            await _await_ready(worker, ready)
        log.info(
            "supervisor.ready",
            workers=len(workers),
            pids=[w.process.pid for w in workers],
            order_entry=shared.listen,
            admin=shared.admin_listen,
            metrics=[m for m in shared_metrics if m] or None,
            upstream=upstream,
        )
        await _watch(context, shared, workers, stop, shared_metrics)
    finally:
        log.info("supervisor.stopping")
        await asyncio.to_thread(_stop_all, [w.process for w in workers], settings.grace_s + 5.0)
        if exchange is not None:
            await exchange.server.stop(settings.grace_s)
        if redis is not None:
            await asyncio.to_thread(redis.stop)
        log.info("supervisor.stopped")


async def _watch(
    context: SpawnContext,
    settings: Settings,
    workers: list[_Worker],
    stop: asyncio.Event,
    metrics: list[str | None],
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _WATCH_EVERY_S)
        for slot, worker in enumerate(workers):
            if stop.is_set() or worker.process.is_alive():
                continue
            ran_s = time.monotonic() - worker.started_at
            log.error(
                "worker.exited",
                worker=worker.index,
                pid=worker.process.pid,
                exit_code=worker.process.exitcode,
                ran_s=round(ran_s, 3),
            )
            backoff = _RESTART_BACKOFF_MIN_S if ran_s >= _STABLE_AFTER_S else worker.backoff_s
            if ran_s < _STABLE_AFTER_S:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                if stop.is_set():
                    return
            replacement, ready = _spawn(context, settings, worker.index, metrics)
            replacement.backoff_s = min(backoff * 2, _RESTART_BACKOFF_MAX_S)
            workers[slot] = replacement
            try:
                await _await_ready(replacement, ready)
            except WorkerError as exc:
                log.error("worker.restart_failed", worker=worker.index, error=str(exc))
                continue
            log.info("worker.restarted", worker=worker.index, pid=replacement.process.pid)


def _spawn(
    context: SpawnContext, settings: Settings, index: int, metrics: list[str | None]
) -> tuple[_Worker, Connection]:
    ready, child_end = context.Pipe(duplex=False)
    own = replace(settings, metrics_listen=metrics[index])
    process = context.Process(
        target=_worker_main,
        args=(own, index, os.getpid(), child_end),
        name=f"pretrade-gateway-worker-{index}",
        daemon=False,
    )
    process.start()
    child_end.close()
    return _Worker(index, process, time.monotonic()), ready


async def _await_ready(worker: _Worker, ready: Connection) -> None:
    def block() -> bool:
        done = wait([ready, worker.process.sentinel], timeout=READY_TIMEOUT_S)
        if ready in done:
            with contextlib.suppress(EOFError, OSError):
                return bool(ready.recv())
        return False

    try:
        ok = await asyncio.to_thread(block)
    finally:
        ready.close()
    if not ok:
        worker.process.kill()
        await asyncio.to_thread(worker.process.join, 5.0)
        raise WorkerError(
            f"gateway worker {worker.index} did not start "
            f"(exit code {worker.process.exitcode}); see its log lines above"
        )


def _stop_all(processes: list[BaseProcess], timeout_s: float) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5.0)


def _metrics_addresses(address: str | None, workers: int) -> list[str | None]:
    """Each worker's own metrics endpoint (a scrape must see one process's counters):
    ``HOST:P`` gives worker ``k`` port ``P + k``; port 0 gives each a free port."""
    if address is None:
        return [None] * workers
    host, _, port = address.rpartition(":")
    if port == "0":
        return [f"{host}:{free_port()}" for _ in range(workers)]
    return [f"{host}:{int(port) + k}" for k in range(workers)]


def _with_fixed_port(address: str) -> str:
    """Workers must all bind the same port: resolve port 0 once, here."""
    host, _, port = address.rpartition(":")
    return f"{host}:{free_port()}" if port == "0" else address


# -- in the worker process ----------------------------------------------------


def _worker_main(settings: Settings, index: int, parent_pid: int, ready: Connection) -> None:
    from gateway.logs import configure_logging

    configure_logging(settings.log_level)
    structlog.contextvars.bind_contextvars(worker=index)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(_worker(settings, parent_pid, ready))
    else:
        uvloop.run(_worker(settings, parent_pid, ready))


async def _worker(settings: Settings, parent_pid: int, ready: Connection) -> None:
    from gateway.server import serve

    def on_ready(_: object) -> None:
        ready.send(True)
        ready.close()

    orphan_watch = asyncio.create_task(_stop_when_orphaned(parent_pid))
    try:
        await serve(settings, on_ready=on_ready)
    finally:
        orphan_watch.cancel()


async def _stop_when_orphaned(parent_pid: int) -> None:
    # A worker whose supervisor died (even by SIGKILL) stops instead of serving on alone.
    # (Polled: Linux tells no one when a parent dies, short of prctl.)
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)
            return
