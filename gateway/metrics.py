"""Prometheus metrics: a :class:`~gateway.decisions.DecisionSink` plus gauges read at scrape.

Every gateway has its own registry (several can share a process, as in the
tests); ``--metrics-listen`` serves it over HTTP. Labels are bounded: method,
decision, reason, stage path, operation, status code. Never account ids.

What every call touches (decision counts; decision, counter call and upstream
latency) is kept in plain ints and lists and turned into metric families at
scrape time: a prometheus_client counter and histogram cost about 1.5 µs per
call with their locks, these a few hundred nanoseconds. Only the event loop
writes them.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from gateway.decisions import Decision
from gateway.model import FlagKind
from gateway.snapshot import Snapshot, now_ms

#: Decisions take microseconds locally, around a millisecond with a Redis call.
DECISION_BUCKETS = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
)  # fmt: skip
CALL_BUCKETS = (
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """All of one gateway's metrics. ``decision`` and ``upstream`` run on the hot path."""

    def __init__(self, snapshot: Snapshot, instance: str, policy_version: str) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot = snapshot
        self._hot = _HotPath()
        r.register(self._hot)
        self.redis_errors = Counter(
            "pretrade_redis_errors", "Failed Redis calls by operation.", ["op"], registry=r
        )
        self.upstream_errors = Counter(
            "pretrade_upstream_errors", "Upstream calls that ended in an error, by gRPC code.",
            ["method", "code"], registry=r,
        )  # fmt: skip
        self.propagation = Histogram(
            "pretrade_flag_propagation_seconds", "From a flag write in Redis to this gateway "
            "applying it, by flag kind (Redis clock vs this host's clock).",
            ["kind"], buckets=LAG_BUCKETS, registry=r,
        )  # fmt: skip
        Gauge(
            "pretrade_snapshot_age_seconds",
            "Seconds since the flag snapshot was last loaded or changed.", registry=r,
        ).set_function(lambda: max(0, now_ms() - snapshot.last_update_ms) / 1000)  # fmt: skip
        Gauge(
            "pretrade_snapshot_synced", "1 while following Redis; 0 while disconnected "
            "(decisions go on from the last snapshot).", registry=r,
        ).set_function(lambda: 1.0 if snapshot.synced else 0.0)  # fmt: skip
        Gauge("pretrade_kill_switches_engaged", "Kill switches in force.", registry=r).set_function(
            lambda: _in_force(snapshot.kill_switches)
        )
        Gauge("pretrade_shadow_rules", "Shadowed rules in force.", registry=r).set_function(
            lambda: _in_force(snapshot.shadow_rules)
        )
        self.audit_backlog = Gauge(
            "pretrade_audit_backlog", "Audit records waiting to be written.", registry=r
        )
        self.audit_written = Counter(
            "pretrade_audit_written", "Audit records written, by stream.", ["stream"], registry=r
        )
        self.audit_dropped = Counter(
            "pretrade_audit_dropped", "Audit records lost, by cause "
            "(queue_full: backlog at its bound; write_failed: Redis refused or unreachable).",
            ["cause"], registry=r,
        )  # fmt: skip
        self.info = Info("pretrade_gateway", "This gateway instance.", registry=r)
        self.info.info({"instance": instance, "policy_version": policy_version})
        self._instance = instance
        #: The counter call's time, in integer nanoseconds: observed on every accepted order.
        self._counters_call = self._hot.redis_call("counters", unit=1e-9)
        snapshot.on_change(self._flag_applied)

    def redis_call(self, op: str, seconds: float) -> None:
        """A Redis call off the order path took ``seconds`` (``audit``: a batch of records)."""
        self._hot.redis_call(op).observe(seconds)

    def set_policy_version(self, version: str) -> None:
        self.info.info({"instance": self._instance, "policy_version": version})

    # -- DecisionSink --------------------------------------------------------

    def decision(self, decision: Decision) -> None:
        hot = self._hot
        denial = decision.denial
        # The enums are str members: keys without the (slow) ``.value`` descriptor.
        key = (decision.method, decision.outcome, denial.reason if denial is not None else "")
        counts = hot.decisions
        counts[key] = counts.get(key, 0) + 1
        redis_ns = decision.redis_ns
        if redis_ns:
            hot.with_redis.observe(decision.local_ns + redis_ns)
            self._counters_call.observe(redis_ns)
        else:
            hot.local.observe(decision.local_ns)
        for shadowed in decision.shadowed:
            reason = shadowed.reason
            hot.shadow_hits[reason] = hot.shadow_hits.get(reason, 0) + 1

    def upstream(self, method: str, seconds: float, code: str | None) -> None:
        histogram = self._hot.upstream.get(method)
        if histogram is None:
            histogram = self._hot.upstream[method] = _Buckets(CALL_BUCKETS)
        histogram.observe(seconds)
        if code is not None:
            self.upstream_errors.labels(method, code).inc()

    # -- snapshot ------------------------------------------------------------

    def _flag_applied(self, kind: FlagKind, key: str) -> None:
        if kind is FlagKind.SYMBOL_SPEC:
            spec = self._snapshot.admin_specs.get(key)
            version = spec.version if spec is not None else 0
        else:
            record = self._snapshot.states_of(kind).get(key)
            version = record.version if record is not None else 0
        if version:  # deletes carry no write time
            lag_s = (time.time_ns() // 1000 - version) / 1e6
            self.propagation.labels(kind.name.lower()).observe(max(0.0, lag_s))


class _Buckets:
    """A histogram's raw counts: one slot per bucket bound plus one for +Inf.

    Observed values are in ``unit`` seconds (1e-9: integer nanoseconds, so the hot
    path neither divides nor touches a float); bounds and the sum are reported in
    seconds.
    """

    __slots__ = ("bounds", "counts", "labels", "total", "unit")

    def __init__(self, bounds: Sequence[float], unit: float = 1.0) -> None:
        self.labels = tuple(map(str, bounds))
        self.unit = unit
        self.bounds = tuple(round(b / unit) if unit != 1.0 else b for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total: float = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        counts, total = list(self.counts), self.total  # one consistent copy
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.labels, "+Inf"), counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets, total * self.unit


class _HotPath(Collector):
    """The per-call metrics, as plain numbers; metric families are built at scrape."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, str, str], int] = {}
        self.shadow_hits: dict[str, int] = {}
        self.local = _Buckets(DECISION_BUCKETS, unit=1e-9)
        self.with_redis = _Buckets(DECISION_BUCKETS, unit=1e-9)
        self.upstream: dict[str, _Buckets] = {}
        self.redis_calls: dict[str, _Buckets] = {}

    def redis_call(self, op: str, unit: float = 1.0) -> _Buckets:
        """The histogram of one Redis operation's calls, made on first use."""
        histogram = self.redis_calls.get(op)
        if histogram is None:
            histogram = self.redis_calls[op] = _Buckets(CALL_BUCKETS, unit=unit)
        return histogram

    def describe(self) -> Iterator[Metric]:
        return self._families(empty=True)

    def collect(self) -> Iterator[Metric]:
        return self._families(empty=False)

    def _families(self, empty: bool) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "pretrade_decisions", "Order-entry calls decided, by method, decision and reason "
            "(reason empty on accept; for shadow, the first shadowed reason).",
            labels=["method", "decision", "reason"],
        )  # fmt: skip
        shadow = CounterMetricFamily(
            "pretrade_shadow_hits", "Denials not enforced because their rule is shadowed.",
            labels=["reason"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            "pretrade_decision_seconds", "Time to decide a call: path=local when no Redis call "
            "was made, path=redis when the decision included the Redis call.",
            labels=["path"],
        )  # fmt: skip
        upstream = HistogramMetricFamily(
            "pretrade_upstream_seconds", "Upstream (or guarded servicer) call time by method.",
            labels=["method"],
        )  # fmt: skip
        redis_calls = HistogramMetricFamily(
            "pretrade_redis_call_seconds", "Redis round trips by operation "
            "(counters: the hot-path call; audit: a batch of audit records).",
            labels=["op"],
        )  # fmt: skip
        if not empty:
            # list(...) copies in one step under the GIL: the event loop may be adding keys.
            for labels, count in list(self.decisions.items()):
                decisions.add_metric([str(label) for label in labels], count)
            for reason, count in list(self.shadow_hits.items()):
                shadow.add_metric([str(reason)], count)
            for path, histogram in (("local", self.local), ("redis", self.with_redis)):
                if any(histogram.counts):
                    buckets, total = histogram.cumulative()
                    latency.add_metric([path], buckets, total)
            for method, histogram in list(self.upstream.items()):
                buckets, total = histogram.cumulative()
                upstream.add_metric([method], buckets, total)
            for op, histogram in list(self.redis_calls.items()):
                buckets, total = histogram.cumulative()
                redis_calls.add_metric([op], buckets, total)
        yield from (decisions, shadow, latency, upstream, redis_calls)


def _in_force(table: dict[str, Any]) -> float:
    now = now_ms()
    return float(sum(1 for record in table.values() if record.in_force(now)))


class MetricsServer:
    """The ``/metrics`` HTTP endpoint (a thread), for one registry."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--metrics-listen: not HOST:PORT: {listen!r}")
        self._server: WSGIServer
        self._thread: Thread
        self._server, self._thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=registry
        )
        self.port: int = self._server.server_port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
