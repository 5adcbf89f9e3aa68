"""What the engine reports about every call, and who listens.

The engine builds one :class:`Decision` per order-entry call (accepted,
refused or shadowed) and hands it to a :class:`DecisionSink`. The audit
writer, the metrics and the refusal log are sinks; a deployment combines them
with :class:`FanoutSink`. A sink's ``decision`` runs on the hot path, inside
the call: it must only count or enqueue, never wait or do I/O.
"""

from __future__ import annotations

import enum
import itertools
import os
import secrets
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from gateway.reasons import Denial
from gateway.validation import OrderCall

#: Trailing-metadata key carrying the request id back to the client.
REQUEST_ID_KEY = "x-request-id"


class Outcome(enum.StrEnum):
    ACCEPT = "accept"
    REFUSE = "refuse"
    #: A shadowed rule would have refused; the call went on.
    SHADOW = "shadow"


class Stage(enum.StrEnum):
    """The last stage that ran for a call (for a refusal: the stage that refused)."""

    VALIDATION = "validation"
    #: The API key check (missing, unknown, revoked key; account not bound to it).
    AUTH = "auth"
    LOCAL = "local"
    REDIS = "redis"


class Decision(NamedTuple):
    """One call's decision. A tuple: building one costs next to nothing."""

    request_id: str
    at_ms: int
    method: str
    account_id: str
    symbol: str
    outcome: Outcome
    #: The refusing denial; for SHADOW the first shadowed one; None on accept.
    denial: Denial | None
    #: Every shadowed denial, in check order.
    shadowed: tuple[Denial, ...]
    stage: Stage
    local_ns: int
    #: Time spent in the Redis call; 0 when none was made.
    redis_ns: int
    call: OrderCall | None


class DecisionSink(Protocol):
    """Listens to the engine. Both methods run on the hot path: count or enqueue only."""

    def decision(self, decision: Decision) -> None: ...

    def upstream(self, method: str, seconds: float, code: str | None) -> None:
        """An upstream call (proxy) or servicer call (interceptor) ended; ``code`` None on OK."""


class NullSink:
    def decision(self, decision: Decision) -> None:
        return None

    def upstream(self, method: str, seconds: float, code: str | None) -> None:
        return None


class FanoutSink:
    """Hands every report to each sink in turn."""

    def __init__(self, sinks: Iterable[DecisionSink]) -> None:
        self.sinks = tuple(sinks)
        self._listeners = tuple(sink.decision for sink in self.sinks)

    def decision(self, decision: Decision) -> None:
        for listener in self._listeners:
            listener(decision)

    def upstream(self, method: str, seconds: float, code: str | None) -> None:
        for sink in self.sinks:
            sink.upstream(method, seconds, code)


class RequestIds:
    """Unique request ids, cheaply: a random per-process prefix and a counter.

    The prefix (pid plus random bits) keeps ids of gateway processes and
    restarts apart without any coordination.
    """

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"{os.getpid():x}{secrets.token_hex(3)}"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self._counter):x}"
