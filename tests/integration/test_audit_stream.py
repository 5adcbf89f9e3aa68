"""The audit writer against a real Redis: bounds, sampling, loss accounting, listing."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from gateway.audit import AuditConfig, AuditWriter, decision_matcher, list_entries
from gateway.decisions import Decision, Outcome, Stage
from gateway.embedded_redis import EmbeddedRedis
from gateway.metrics import Metrics
from gateway.reasons import Denial, Reason
from gateway.snapshot import Snapshot
from gateway.store.commands import Arg, RedisPyCommands
from gateway.store.keys import DECISIONS_STREAM
from gateway.store.redis_client import hot_client

REFUSAL = Denial(Reason.ACCOUNT_FROZEN, "frozen", {"limit": "account_state", "account_id": "a"})


def decision(n: int, outcome: Outcome = Outcome.REFUSE, account: str = "a") -> Decision:
    denial = None if outcome is Outcome.ACCEPT else REFUSAL
    return Decision(f"r-{n}", 1_700_000_000_000 + n, "PlaceOrder", account, "BTC-USDT", outcome,
                    denial, (), Stage.LOCAL, 1000, 0, None)  # fmt: skip


def writer(redis: aioredis.Redis, **config: object) -> tuple[AuditWriter, Metrics]:
    snapshot = Snapshot()
    metrics = Metrics(snapshot, "test", "v1")
    return AuditWriter(
        RedisPyCommands(redis), snapshot, metrics, "test", "v1", AuditConfig(**config)
    ), metrics  # type: ignore[arg-type]


class LogRecorder:
    """Stands in for the module's logger (structlog's capture is unreliable with cached loggers)."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def _record(self, event: str, **fields: object) -> None:
        self.events.append({"event": event, **fields})

    info = warning = error = _record


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_stream_is_bounded_by_length(redis_url: str) -> None:
    redis = hot_client(redis_url)
    await redis.config_set("stream-node-max-entries", 10)  # so that "~" trims close to the bound
    audit, _ = writer(redis, max_len=50, batch_size=100)
    for n in range(500):
        audit.decision(decision(n))
    await audit.flush()
    length = await redis.xlen(DECISIONS_STREAM)
    assert 50 <= length <= 60
    newest = await redis.xrevrange(DECISIONS_STREAM, count=1)
    assert newest[0][1]["rid"] == "r-499"
    await redis.aclose()


async def test_stream_is_bounded_by_age(redis_url: str) -> None:
    redis = hot_client(redis_url)
    await redis.config_set("stream-node-max-entries", 10)
    # Entries "written" long ago: explicit old ids, as a stream kept for days would hold.
    for n in range(100):
        await redis.xadd(DECISIONS_STREAM, {"rid": f"old-{n}"}, id=f"{1_000_000 + n}-0")
    audit, _ = writer(redis, max_len=0, max_age_ms=60_000)
    for n in range(30):
        audit.decision(decision(n))
    await audit.flush()
    entries = await redis.xrange(DECISIONS_STREAM)
    assert [e[1]["rid"] for e in entries] == [f"r-{n}" for n in range(30)]
    await redis.aclose()


async def test_accepts_sampled_refusals_always(redis_url: str) -> None:
    redis = hot_client(redis_url)
    audit, _ = writer(redis, accept_every=10)
    for n in range(100):
        audit.decision(decision(n, Outcome.ACCEPT))
    audit.decision(decision(1000))
    await audit.flush()
    entries = await redis.xrange(DECISIONS_STREAM)
    accepts = [e for e in entries if e[1]["d"] == "accept"]
    assert len(accepts) == 10 and len(entries) == 11
    none, _ = writer(redis, accept_every=0)
    none.decision(decision(1, Outcome.ACCEPT))
    await none.flush()
    assert await redis.xlen(DECISIONS_STREAM) == 11
    await redis.aclose()


async def test_full_queue_drops_are_counted_and_logged(redis_url: str, monkeypatch: object) -> None:
    import gateway.audit

    recorder = LogRecorder()
    monkeypatch.setattr(gateway.audit, "log", recorder)  # type: ignore[attr-defined]
    logs = recorder.events
    redis = hot_client(redis_url)
    audit, metrics = writer(redis, queue_limit=5)
    for n in range(8):
        audit.decision(decision(n))
    assert sample(metrics, "pretrade_audit_dropped_total", cause="queue_full") == 3
    assert sample(metrics, "pretrade_audit_backlog") == 5
    assert any(e["event"] == "audit.records_lost" and e["lost"] == {"queue_full": 1} for e in logs)
    await audit.flush()
    assert await redis.xlen(DECISIONS_STREAM) == 5
    assert audit.lost == 3
    await redis.aclose()


async def test_redis_down_loses_records_loudly_and_decisions_go_on(
    tmp_path: pathlib.Path, monkeypatch: object
) -> None:
    import gateway.audit

    recorder = LogRecorder()
    monkeypatch.setattr(gateway.audit, "log", recorder)  # type: ignore[attr-defined]
    logs = recorder.events
    server = EmbeddedRedis(tmp_path / "r").start()
    redis = hot_client(server.url)
    audit, metrics = writer(redis)
    audit.start()
    server.stop()
    for n in range(20):
        audit.decision(decision(n))  # never blocks, never raises
    await audit.stop()  # retries, then gives up and counts what is left
    assert audit.lost == 20
    assert sample(metrics, "pretrade_audit_dropped_total", cause="write_failed") == 20
    assert sample(metrics, "pretrade_redis_errors_total", op="audit") >= 1
    assert any(e["event"] == "audit.records_lost" for e in logs)
    await redis.aclose()


async def test_list_scans_are_bounded_and_resumable(redis_url: str) -> None:
    redis = hot_client(redis_url)
    audit, _ = writer(redis)
    for n in range(1200):
        audit.decision(decision(n, account="needle" if n in (5, 1100) else "hay"))
    await audit.flush()
    match = decision_matcher(account_id="needle")
    found, token = await list_entries(redis, DECISIONS_STREAM, match, 10, "", None, None)
    assert [f["rid"] for _, f in found] == ["r-1100", "r-5"] and token == ""
    page, token = await list_entries(redis, DECISIONS_STREAM, match, 1, "", None, None)
    assert [f["rid"] for _, f in page] == ["r-1100"] and token == page[0][0]
    rest, token = await list_entries(redis, DECISIONS_STREAM, match, 1, token, None, None)
    assert [f["rid"] for _, f in rest] == ["r-5"]
    await redis.aclose()


async def test_list_continues_past_the_scan_budget(redis_url: str, monkeypatch: object) -> None:
    import gateway.audit

    monkeypatch.setattr(gateway.audit, "SCAN_BUDGET", 600)  # type: ignore[attr-defined]
    redis = hot_client(redis_url)
    audit, _ = writer(redis)
    for n in range(1200):
        audit.decision(decision(n, account="needle" if n in (5, 1100) else "hay"))
    await audit.flush()
    match = decision_matcher(account_id="needle")
    first, token = await list_entries(redis, DECISIONS_STREAM, match, 10, "", None, None)
    assert [f["rid"] for _, f in first] == ["r-1100"] and token, (
        "budget spent: a partial page and a token"
    )
    rest: list[str] = []
    for _ in range(5):  # the contract: go on while there is a token
        more, token = await list_entries(redis, DECISIONS_STREAM, match, 10, token, None, None)
        rest += [f["rid"] for _, f in more]
        if not token:
            break
    assert rest == ["r-5"] and token == ""
    await redis.aclose()


async def test_a_clean_shutdown_writes_the_backlog_and_logs_no_failure(
    redis_url: str, monkeypatch: object
) -> None:
    import gateway.audit

    recorder = LogRecorder()
    monkeypatch.setattr(gateway.audit, "log", recorder)  # type: ignore[attr-defined]
    redis = hot_client(redis_url)
    audit, _ = writer(redis)
    audit.start()
    for n in range(200):
        audit.decision(decision(n))
    await audit.stop()
    assert await redis.xlen(DECISIONS_STREAM) == 200
    assert audit.lost == 0
    assert recorder.events == []  # no "recovered" after failures that never happened
    await redis.aclose()


class _WriteSizes(RedisPyCommands):
    """Real writes, with the size of each one noted."""

    sizes: list[int]

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        self.sizes.append(len(commands))
        return await super().execute_many(commands)


async def test_writes_are_small_while_the_writer_keeps_up_and_large_for_a_backlog(
    redis_url: str,
) -> None:
    redis = hot_client(redis_url)
    commands = _WriteSizes(redis)
    commands.sizes = []
    snapshot = Snapshot()
    audit = AuditWriter(commands, snapshot, Metrics(snapshot, "t", "v1"), "t", "v1",
                        AuditConfig(max_len=0))  # fmt: skip
    for n in range(300):  # what one flush interval holds at a few thousand orders a second
        audit.decision(decision(n))
    await audit.flush()
    assert commands.sizes == [64, 64, 64, 64, 44]

    commands.sizes = []
    for n in range(3000):  # a backlog: more than ten small writes' worth
        audit.decision(decision(n))
    await audit.flush()
    assert commands.sizes[:4] == [500, 500, 500, 500]
    assert sum(commands.sizes) == 3000 and commands.sizes[-1] <= 64
    assert await redis.xlen(DECISIONS_STREAM) == 3300
    await redis.aclose()


async def test_each_record_carries_its_own_refusal_when_refusals_repeat(redis_url: str) -> None:
    redis = hot_client(redis_url)
    audit, _ = writer(redis)
    for n in range(300):  # one reused Denial, and fresh ones (ids may be reused once freed)
        denial = (
            REFUSAL
            if n % 2
            else Denial(
                Reason.ORDER_RATE_EXCEEDED, f"rate {n}", {"limit": "order_rate", "count": str(n)}
            )
        )
        audit.decision(Decision(f"r-{n}", 1_700_000_000_000 + n, "PlaceOrder", "a", "BTC-USDT",
                                Outcome.REFUSE, denial, (), Stage.REDIS, 1000, 0, None))  # fmt: skip
    await audit.flush()
    entries = await redis.xrange(DECISIONS_STREAM)
    assert len(entries) == 300
    for _, fields in entries:
        n = int(fields["rid"].removeprefix("r-"))
        if n % 2:
            assert fields["r"] == "ACCOUNT_FROZEN" and fields["msg"] == "frozen"
        else:
            assert fields["msg"] == f"rate {n}" and f'"count":"{n}"' in fields["md"]
    await redis.aclose()
