"""What operations staff see: audit trail, metrics, refusal log, request ids.

:class:`Operations` builds the decision sinks for one gateway (the engine
reports to :attr:`Operations.sink`), runs the audit writer and the metrics
endpoint, and records admin changes. The :class:`~gateway.engine.Gatekeeper`
owns one and starts and stops it with everything else.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError

from gateway.admin_auth import current_principal
from gateway.audit import AdminActionRecord, AuditConfig, AuditWriter, write_admin_action
from gateway.decisions import (
    REQUEST_ID_KEY,
    Decision,
    DecisionSink,
    FanoutSink,
    Outcome,
    RequestIds,
)
from gateway.logs import info_enabled
from gateway.metrics import Metrics, MetricsServer
from gateway.snapshot import Snapshot, now_ms
from gateway.store.commands import Commands, RedisPyCommands
from gateway.store.redis_client import RedisClient

log = structlog.get_logger("gateway.ops")


def default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class OpsConfig:
    #: Names this gateway in audit records and metrics; "" for host:pid.
    instance: str = ""
    #: HOST:PORT of the Prometheus endpoint; None for none.
    metrics_listen: str | None = None
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: Refusal log lines a second at most (0: none); the rest are counted, not logged.
    refusal_log_per_s: int = 100


class RefusalLog:
    """Structured log lines for refusals and shadowed refusals; nothing for accepts.

    At most ``per_second`` lines a second (0: none): a refusal storm (a frozen
    bot retrying in a loop) must not turn into a log storm that costs more than
    the decisions. What is left out is counted and reported on the next line
    (``suppressed``); the audit trail and the metrics still see every call.
    Below ``info`` the whole sink costs one comparison.
    """

    __slots__ = ("_budget", "_log", "_second", "_suppressed", "per_second")

    def __init__(self, per_second: int = 100, logger: Any = None) -> None:
        self.per_second = per_second
        self._log = logger if logger is not None else log
        self._second = 0
        self._budget = 0
        self._suppressed = 0

    def decision(self, decision: Decision) -> None:
        if decision.outcome is Outcome.ACCEPT or not self.per_second or not info_enabled():
            return
        second = decision.at_ms // 1000
        if second != self._second:
            self._second, self._budget = second, self.per_second
        if self._budget <= 0:
            self._suppressed += 1
            return
        self._budget -= 1
        suppressed, self._suppressed = self._suppressed, 0
        denial = decision.denial
        assert denial is not None
        self._log.info(
            "order.refused" if decision.outcome is Outcome.REFUSE else "order.shadowed",
            request_id=decision.request_id,
            method=decision.method,
            account_id=decision.account_id,
            symbol=decision.symbol,
            reason=denial.reason.value,
            message=denial.message,
            detail=dict(denial.metadata),
            stage=decision.stage.value,
            shadowed=[s.reason.value for s in decision.shadowed] or None,
            suppressed=suppressed or None,
        )

    def upstream(self, method: str, seconds: float, code: str | None) -> None:
        return None


class Operations:
    def __init__(
        self,
        redis: RedisClient,
        snapshot: Snapshot,
        policy_version: str,
        config: OpsConfig,
        audit_commands: Commands | None = None,
    ) -> None:
        """``audit_commands``: where decision batches go (default: through ``redis``)."""
        self.config = config
        self.instance = config.instance or default_instance()
        self._redis = redis
        self.request_ids = RequestIds()
        self.metrics = Metrics(snapshot, self.instance, policy_version)
        self.audit = AuditWriter(
            audit_commands or RedisPyCommands(redis),
            snapshot,
            self.metrics,
            self.instance,
            policy_version,
            config.audit,
        )
        self.refusal_log = RefusalLog(config.refusal_log_per_s)
        self.sink: DecisionSink = FanoutSink((self.metrics, self.audit, self.refusal_log))
        self.metrics_server: MetricsServer | None = None

    @property
    def metrics_port(self) -> int:
        return self.metrics_server.port if self.metrics_server is not None else 0

    def set_policy_version(self, version: str) -> None:
        self.audit.policy_version = version
        self.metrics.set_policy_version(version)

    async def start(self) -> None:
        if self.config.metrics_listen:
            self.metrics_server = MetricsServer(self.metrics.registry, self.config.metrics_listen)
        self.audit.start()

    async def stop(self) -> None:
        await self.audit.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None

    async def admin_action(
        self,
        context: Any,
        action: str,
        actor: str,
        reason: str,
        target: str,
        old: str,
        new: str,
        ttl_ms: int = 0,
    ) -> str:
        """Log an admin change, append it to the admin stream, give the caller its request id."""
        record = AdminActionRecord(
            action, actor, reason, target, old, new, ttl_ms, self.request_ids.next(),
            current_principal(),
        )  # fmt: skip
        log.info(
            "admin.action",
            request_id=record.request_id,
            action=action,
            actor=actor,
            reason=reason,
            target=target,
            old=old,
            new=new,
            ttl_ms=ttl_ms or None,
        )
        try:
            await write_admin_action(
                self._redis, record, self.instance, self.config.audit.admin_max_len, now_ms()
            )
            self.metrics.audit_written.labels("admin").inc()
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.labels("audit").inc()
            self.metrics.audit_dropped.labels("write_failed").inc()
            log.error("audit.admin_action_lost", request_id=record.request_id, error=str(exc))
        if context is not None:
            add_request_id(context, record.request_id)
        return record.request_id


def add_request_id(context: Any, request_id: str) -> None:
    """Append ``x-request-id`` to the call's trailing metadata, keeping what is there."""
    existing: Sequence[tuple[str, Any]] = tuple(context.trailing_metadata() or ())
    context.set_trailing_metadata((*existing, (REQUEST_ID_KEY, request_id)))
