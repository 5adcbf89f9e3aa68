"""The load generator: a separate client process, ``python -m bench.loadgen PLAN OUT``.

It runs the phases of a plan (JSON) against gRPC targets and writes one
result per phase (JSON). Requests are serialised once up front and sent as
raw bytes, responses are not parsed: the client spends as little CPU per call
as grpc-python allows. Each phase is preceded by an unrecorded warm-up.

Modes:

* ``sequential``: one call at a time; latency of each.
* ``closed``: ``concurrency`` callers, each sending its next call when the
  previous one returns, for ``duration_s``; throughput and latency.
* ``open``: calls start at a fixed rate whatever happens to earlier calls
  (``rate_per_s`` for ``duration_s``). Latency is measured from when each call
  was *due*, not when it was sent, so a server that falls behind shows it as
  latency instead of quietly slowing the client down (no coordinated
  omission).

A target is a gRPC server (``address``), or a Redis (``redis_url``) whose
"call" is one ``EVALSHA`` of a trivial script over the gateway's own Redis
client: one Redis round trip, timed in the same stretch of the run as the
gRPC phases around it.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from grpc import aio

from bench.lib.orders import BENCH_SYMBOLS, PLACE_PATH, active_accounts, flagged_accounts
from bench.lib.orders import order_pool as build_pool
from bench.lib.procs import cpu_seconds
from bench.lib.stats import encode, new_histogram, record_us, rep_from_histogram
from gateway.store.autopipe import AutoPipeline, auto_pipeline

MAX_IN_FLIGHT = 20_000
OK = "OK"

Call = Callable[[bytes], Awaitable[bytes]]


def mix_requests(mix: dict[str, Any]) -> tuple[list[bytes], frozenset[str]]:
    count = int(mix.get("accounts", 1024))
    if mix["kind"] == "accept":
        accounts, expect = active_accounts(count), frozenset({OK})
    else:
        accounts = flagged_accounts(count)
        expect = frozenset({"FAILED_PRECONDITION", "PERMISSION_DENIED"})
    pool = build_pool(accounts, BENCH_SYMBOLS, max(count, 256))
    return [r.SerializeToString() for r in pool], expect


class Phase:
    """One phase against one target: timings, outcome counts, CPU used."""

    def __init__(self, calls: list[Call], requests: list[bytes], expect: frozenset[str]) -> None:
        self.calls = calls
        self.requests = requests
        self.expect = expect
        self.histogram = new_histogram()
        self.outcomes: Counter[str] = Counter()
        self._next = 0

    def request(self) -> tuple[Call, bytes]:
        i = self._next
        self._next = i + 1
        return self.calls[i % len(self.calls)], self.requests[i % len(self.requests)]

    async def one(self, due_ns: int | None = None, record: bool = True) -> None:
        call, raw = self.request()
        start = time.perf_counter_ns()
        try:
            await call(raw)
            outcome = OK
        except aio.AioRpcError as exc:
            outcome = exc.code().name
        end = time.perf_counter_ns()
        if record:
            self.outcomes[outcome] += 1
            # From when it was due; a call the timer let out a little early (uvloop
            # timers tick in ms) is measured from when it was really sent.
            origin = start if due_ns is None else min(due_ns, start)
            record_us(self.histogram, (end - origin) / 1000)

    @property
    def errors(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome not in self.expect)


async def sequential(phase: Phase, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        await phase.one()
    return time.perf_counter() - start


async def closed(phase: Phase, concurrency: int, duration_s: float, record: bool = True) -> float:
    start = time.perf_counter()
    deadline = start + duration_s

    async def lane() -> None:
        while time.perf_counter() < deadline:
            await phase.one(record=record)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - start


async def open_loop(
    phase: Phase, rate_per_s: float, duration_s: float, record: bool = True
) -> tuple[float, int]:
    """Returns wall time (first due call to last completion) and the calls started late."""
    interval_ns = int(1e9 / rate_per_s)
    total = max(1, int(rate_per_s * duration_s))
    start_ns = time.perf_counter_ns()
    tasks: set[asyncio.Task[None]] = set()
    late = 0
    for i in range(total):
        due = start_ns + i * interval_ns
        now = time.perf_counter_ns()
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
        elif now - due > 1_000_000:
            late += 1
        while len(tasks) >= MAX_IN_FLIGHT:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.ensure_future(phase.one(due_ns=due, record=record))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    return (time.perf_counter_ns() - start_ns) / 1e9, late


async def run_plan(plan: dict[str, Any]) -> list[dict[str, Any]]:
    timeout = float(plan.get("call_timeout_s", 5.0))
    channels_per_target = int(plan.get("channels", 1))
    warmup_s = float(plan.get("warmup_s", 0.3))
    options = [("grpc.use_local_subchannel_pool", 1)] if channels_per_target > 1 else []
    channels: dict[str, list[aio.Channel]] = {}
    pipes: list[AutoPipeline] = []
    calls: dict[str, list[Call]] = {}
    for name, target in plan["targets"].items():
        if "redis_url" in target:
            pipe = auto_pipeline(target["redis_url"], 2_000, 2_000, "bench-loadgen")
            assert pipe is not None, "a redis:// URL"
            pipes.append(pipe)
            calls[name] = [await _evalsha_call(pipe)]
            continue
        channels[name] = [
            aio.insecure_channel(target["address"], options=options)
            for _ in range(channels_per_target)
        ]
        calls[name] = [_raw_call(ch, timeout) for ch in channels[name]]
        for channel in channels[name]:
            await asyncio.wait_for(channel.channel_ready(), 10)
    mixes = {name: mix_requests(mix) for name, mix in plan["mixes"].items()}
    results = []
    try:
        for spec in plan["phases"]:
            requests, expect = mixes[spec["mix"]]
            target = plan["targets"][spec["target"]]
            phase = Phase(calls[spec["target"]], requests, expect)
            results.append(await _run_phase(spec, phase, target, warmup_s))
    finally:
        for chans in channels.values():
            for channel in chans:
                await channel.close(None)
        for pipe in pipes:
            await pipe.aclose()
    return results


async def _run_phase(
    spec: dict[str, Any], phase: Phase, target: dict[str, Any], warmup_s: float
) -> dict[str, Any]:
    mode = spec["mode"]
    if warmup_s > 0:
        if mode == "open":
            await open_loop(phase, spec["rate_per_s"], warmup_s, record=False)
        else:
            await closed(phase, int(spec.get("concurrency", 1)), warmup_s, record=False)
    pids = [int(p) for p in target.get("pids", [])]
    server_cpu0 = sum(cpu_seconds(p) for p in pids)
    client_cpu0 = time.process_time()
    extra: dict[str, Any] = {}
    if mode == "sequential":
        elapsed = await sequential(phase, int(spec["count"]))
    elif mode == "closed":
        elapsed = await closed(phase, int(spec["concurrency"]), float(spec["duration_s"]))
    elif mode == "open":
        elapsed, late = await open_loop(phase, float(spec["rate_per_s"]), float(spec["duration_s"]))
        extra["started_late"] = late
    else:
        raise ValueError(f"unknown mode {mode}")
    client_cpu = time.process_time() - client_cpu0
    server_cpu = sum(cpu_seconds(p) for p in pids) - server_cpu0
    rep = rep_from_histogram(
        phase.histogram,
        elapsed,
        phase.errors,
        client_cpu_pct=round(100 * client_cpu / elapsed, 1) if elapsed else None,
        server_cpu_pct=round(100 * server_cpu / elapsed, 1) if elapsed and pids else None,
        outcomes=dict(phase.outcomes),
        **extra,
    )
    return {**spec, "rep": rep, "histogram": encode(phase.histogram)}


def _raw_call(channel: aio.Channel, timeout: float) -> Call:
    multicallable = channel.unary_unary(PLACE_PATH)

    async def call(raw: bytes) -> bytes:
        response: bytes = await multicallable(raw, timeout=timeout)
        return response

    return call


TRIVIAL_SCRIPT = "return 1"


async def _evalsha_call(pipe: AutoPipeline) -> Call:
    """One round trip to Redis, as the order path makes its counter call."""
    sha = await pipe.execute("SCRIPT", "LOAD", TRIVIAL_SCRIPT)

    async def call(raw: bytes) -> bytes:
        await pipe.evalsha(sha, TRIVIAL_SCRIPT, (), ())
        return raw

    return call


def main(argv: list[str]) -> int:
    plan = json.loads(pathlib.Path(argv[0]).read_text())
    results = uvloop.run(run_plan(plan))
    pathlib.Path(argv[1]).write_text(json.dumps({"phases": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
