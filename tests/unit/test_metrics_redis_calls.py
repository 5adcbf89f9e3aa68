"""The Redis call histogram: the order path's counter call and the audit batches."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.decisions import Decision, Outcome, Stage
from gateway.metrics import Metrics
from gateway.snapshot import Snapshot


def _samples(metrics: Metrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def _accepted(redis_ns: int) -> Decision:
    return Decision(
        "r-1", 0, "PlaceOrder", "alice", "BTC-USDT", Outcome.ACCEPT, None, (),
        Stage.REDIS if redis_ns else Stage.LOCAL, 4_000, redis_ns, None,
    )  # fmt: skip


def test_counter_calls_and_audit_batches_are_exported_by_op() -> None:
    metrics = Metrics(Snapshot(), "t", "v1")
    metrics.decision(_accepted(redis_ns=300_000))  # 0.3 ms
    metrics.decision(_accepted(redis_ns=2_000_000))  # 2 ms
    metrics.decision(_accepted(redis_ns=0))  # decided locally: no counter call
    metrics.redis_call("audit", 0.004)
    m = _samples(metrics)
    assert m['pretrade_redis_call_seconds_count{op="counters"}'] == 2
    assert abs(m['pretrade_redis_call_seconds_sum{op="counters"}'] - 0.0023) < 1e-12
    assert m['pretrade_redis_call_seconds_bucket{le="0.0005",op="counters"}'] == 1
    assert m['pretrade_redis_call_seconds_bucket{le="0.0025",op="counters"}'] == 2
    assert m['pretrade_redis_call_seconds_bucket{le="+Inf",op="counters"}'] == 2
    assert m['pretrade_redis_call_seconds_count{op="audit"}'] == 1
    assert m['pretrade_redis_call_seconds_bucket{le="0.0025",op="audit"}'] == 0
    assert m['pretrade_redis_call_seconds_bucket{le="0.005",op="audit"}'] == 1
    assert m['pretrade_decision_seconds_count{path="redis"}'] == 2
    assert m['pretrade_decision_seconds_count{path="local"}'] == 1


def test_the_counter_call_series_exists_from_the_start() -> None:
    # At zero before any call, so that rate() over it works from the first scrape.
    m = _samples(Metrics(Snapshot(), "t", "v1"))
    assert m['pretrade_redis_call_seconds_count{op="counters"}'] == 0
    assert not any('op="audit"' in key for key in m)
