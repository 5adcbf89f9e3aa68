"""The decision: validate, run the local checks, (later) the one counter call.

:class:`PreTradeEngine` is what both deployments call; :class:`Gatekeeper`
owns its moving parts (Redis clients, flag store, snapshot follower) and their
lifecycle, so embedding the gateway in an exchange's server is two calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

from google.protobuf.message import DecodeError, Message
from redis.asyncio import Redis

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.checks import Check, account_state_check, symbol_state_check
from gateway.decisions import Decision, DecisionSink, NullSink, Outcome, RequestIds, Stage
from gateway.killswitch import kill_switch_check
from gateway.ops import Operations, OpsConfig
from gateway.policy import Policy
from gateway.reasons import Denial, FieldViolation, invalid
from gateway.shadow import ShadowRules
from gateway.snapshot import Snapshot, now_ms
from gateway.store import FlagStore, SnapshotFollower, follower_client, hot_client
from gateway.validation import OrderCall, parse_amend, parse_cancel, parse_place

ORDER_ENTRY_SERVICE = "pretrade.v1.OrderEntry"

#: The one Redis round trip (counters), run after the local checks pass.
RedisStep = Callable[[OrderCall], Awaitable[Denial | None]]


@dataclass(frozen=True, slots=True)
class OrderMethod:
    """How to read one OrderEntry method's request."""

    name: str
    request_type: type[Message]
    parse: Callable[[Any], OrderCall | Denial]

    @property
    def path(self) -> str:
        return f"/{ORDER_ENTRY_SERVICE}/{self.name}"


ORDER_METHODS: Mapping[str, OrderMethod] = {
    m.path: m
    for m in (
        OrderMethod("PlaceOrder", pb.PlaceOrderRequest, parse_place),
        OrderMethod("CancelOrder", pb.CancelOrderRequest, parse_cancel),
        OrderMethod("AmendOrder", pb.AmendOrderRequest, parse_amend),
    )
}


class PreTradeEngine:
    """Screens order-entry calls. Flag refusals are decided locally and touch no network.

    Every call's decision (accept, refuse or shadow, the stage that decided,
    local and Redis latency) goes to ``sink``.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        checks: Sequence[Check] | None = None,
        clock: Callable[[], int] = now_ms,
        sink: DecisionSink | None = None,
    ) -> None:
        self.snapshot = snapshot
        self._checks: tuple[Check, ...] = tuple(
            checks if checks is not None else default_checks(snapshot)
        )
        self._clock = clock
        self.sink: DecisionSink = sink if sink is not None else NullSink()
        self.shadow = ShadowRules(snapshot)
        self.request_ids = RequestIds()
        self.redis_step: RedisStep | None = None

    def check_local(self, call: OrderCall) -> Denial | None:
        now = self._clock()
        for check in self._checks:
            denial = check(call, now)
            if denial is not None:
                return denial
        return None

    async def screen(
        self, method: OrderMethod, request: Any, request_id: str = ""
    ) -> Denial | None:
        """Validate a parsed request and decide on it; report the decision to the sink.

        A denial whose rule is shadowed does not refuse: it is recorded and the
        remaining checks still run, so shadowing one rule never lets a call
        past another.
        """
        started = perf_counter_ns()
        call = method.parse(request)
        if isinstance(call, Denial):
            return self._validation_failed(method, request, call, started, request_id)
        now = self._clock()
        denial: Denial | None = None
        shadowed: tuple[Denial, ...] = ()
        for check in self._checks:
            found = check(call, now)
            if found is not None:
                if self._shadowed(found, now):
                    shadowed += (found,)
                    continue
                denial = found
                break
        local_done = perf_counter_ns()
        stage, redis_ns = Stage.LOCAL, 0
        if denial is None and self.redis_step is not None:
            stage = Stage.REDIS
            found = await self.redis_step(call)
            redis_ns = perf_counter_ns() - local_done
            if found is not None:
                if self._shadowed(found, now):
                    shadowed += (found,)
                else:
                    denial = found
        if denial is not None:
            outcome, reported = Outcome.REFUSE, denial
        elif shadowed:
            outcome, reported = Outcome.SHADOW, shadowed[0]
        else:
            outcome, reported = Outcome.ACCEPT, None
        self.sink.decision(
            Decision(
                request_id or self.request_ids.next(), now, method.name, call.account_id,
                call.symbol, outcome, reported, shadowed, stage, local_done - started, redis_ns,
                call,
            )
        )  # fmt: skip
        return denial

    def _shadowed(self, denial: Denial, now: int) -> bool:
        """The one place shadow mode is applied, for every stage and every reason."""
        return self.shadow.covers(denial.reason, now)

    def _validation_failed(
        self, method: OrderMethod, request: Any, denial: Denial, started: int, request_id: str
    ) -> Denial:
        self.sink.decision(
            Decision(
                request_id or self.request_ids.next(), self._clock(), method.name,
                str(getattr(request, "account_id", ""))[:64],
                str(getattr(request, "symbol", ""))[:32],
                Outcome.REFUSE, denial, (), Stage.VALIDATION, perf_counter_ns() - started, 0, None,
            )
        )  # fmt: skip
        return denial

    async def screen_bytes(
        self, method: OrderMethod, raw: bytes, request_id: str = ""
    ) -> Denial | None:
        """Like :meth:`screen` for a request still in wire form (the proxy's case)."""
        started = perf_counter_ns()
        try:
            request = method.request_type.FromString(raw)
        except DecodeError:
            denial = invalid(FieldViolation("request", "not a valid protobuf message"))
            return self._validation_failed(method, None, denial, started, request_id)
        return await self.screen(method, request, request_id)


def default_checks(snapshot: Snapshot) -> tuple[Check, ...]:
    # The kill switch first: an emergency stop outranks every other reason.
    return (
        kill_switch_check(snapshot),
        account_state_check(snapshot),
        symbol_state_check(snapshot),
    )


class Gatekeeper:
    """The engine plus everything that keeps its snapshot current, with one lifecycle.

    Use :meth:`open` to connect and load, :meth:`close` to stop::

        keeper = await Gatekeeper.open("redis://127.0.0.1:6380/0", load_policy("limits"))
        server = grpc.aio.server(interceptors=[PreTradeInterceptor(keeper.engine)])
    """

    def __init__(
        self, redis: Redis, follower_redis: Redis, policy: Policy, ops: OpsConfig | None = None
    ) -> None:
        self.redis = redis
        self.policy = policy
        self.snapshot = Snapshot(policy.symbols)
        self.flags = FlagStore(redis)
        #: Audit trail, metrics and refusal log: the engine reports every decision to them.
        self.ops = Operations(redis, self.snapshot, policy.version, ops or OpsConfig())
        self.engine = PreTradeEngine(self.snapshot, sink=self.ops.sink)
        self.engine.request_ids = self.ops.request_ids
        self._follower_redis = follower_redis
        self.follower = SnapshotFollower(follower_redis, self.flags, self.snapshot)

    @classmethod
    async def open(cls, redis_url: str, policy: Policy, ops: OpsConfig | None = None) -> Gatekeeper:
        keeper = cls(hot_client(redis_url), follower_client(redis_url), policy, ops)
        try:
            await keeper.follower.start()
            await keeper.ops.start()
        except BaseException:
            await keeper.follower.stop()
            await keeper.ops.stop()
            await keeper._close_clients()
            raise
        return keeper

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.snapshot.set_policy_specs(policy.symbols)
        self.ops.set_policy_version(policy.version)

    async def close(self) -> None:
        await self.ops.stop()  # flushes the audit backlog while Redis is still open
        await self.follower.stop()
        await self._close_clients()

    async def _close_clients(self) -> None:
        await self.redis.aclose()
        await self._follower_redis.aclose()
