"""The decision: validate, run the local checks, then the one counter call.

:class:`PreTradeEngine` is what both deployments call; :class:`Gatekeeper`
owns its moving parts (Redis clients, flag store, snapshot follower) and their
lifecycle, so embedding the gateway in an exchange's server is two calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from time import perf_counter_ns
from typing import Any, NamedTuple

import structlog
from google.protobuf.message import DecodeError, Message

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.apikeys import ApiKey
from gateway.association import EvidenceRecorder
from gateway.auth import ApiKeyAuth, authorize
from gateway.checks import Check, account_state_check, symbol_state_check
from gateway.counters.gate import ADMITTED, Admission, CounterGate
from gateway.counters.keys import counting_subject
from gateway.counters.plan import CounterPlan
from gateway.counters.resolve import LimitResolver
from gateway.counters.store import RedisCounterStore
from gateway.decisions import Decision, DecisionSink, NullSink, Outcome, RequestIds, Stage
from gateway.groups.store import GroupStore
from gateway.heap import freeze_long_lived
from gateway.killswitch import kill_switch_check
from gateway.model import Channel
from gateway.ops import Operations, OpsConfig
from gateway.policy import Policy
from gateway.policy_watch import PolicyWatcher
from gateway.reasons import Denial, FieldViolation, invalid
from gateway.refprice import ExecutionPriceFollower, reference_price
from gateway.reliability.failure import FailurePolicy
from gateway.reliability.health import StoreHealth
from gateway.reliability.idempotency import DEFAULT_WINDOW_MS
from gateway.reliability.shutdown import ShutdownHooks
from gateway.sanity import order_sanity_checks
from gateway.shadow import ShadowRules
from gateway.snapshot import Snapshot, now_ms
from gateway.store import FlagStore, SnapshotFollower, follower_client, hot_client
from gateway.store.autopipe import AutoPipeline, auto_pipeline
from gateway.store.commands import RedisPyCommands
from gateway.store.redis_client import PubSubSource, RedisClient
from gateway.stp.check import observe_admission, self_trade_check
from gateway.stp.sync import OwnOrderSync
from gateway.validation import OrderCall, parse_amend, parse_cancel, parse_channel, parse_place

Metadata = Iterable[tuple[str, str | bytes]]

ORDER_ENTRY_SERVICE = "pretrade.v1.OrderEntry"


@dataclass(frozen=True, slots=True)
class OrderMethod:
    """How to read one OrderEntry method's request."""

    name: str
    request_type: type[Message]
    parse: Callable[[Any, Channel], OrderCall | Denial]
    #: The upstream's answer, read once the call is accepted.
    response_type: type[Message] = pb.PlaceOrderResponse

    @property
    def path(self) -> str:
        return f"/{ORDER_ENTRY_SERVICE}/{self.name}"


#: ``Decision(...)`` without NamedTuple's Python-level ``__new__`` (one frame less per call).
_new_decision = tuple.__new__
_LOCAL, _REDIS = Stage.LOCAL, Stage.REDIS
_ACCEPT, _REFUSE, _SHADOW = Outcome.ACCEPT, Outcome.REFUSE, Outcome.SHADOW


class _Counting(NamedTuple):
    """A call that passed the local checks and goes to the counters."""

    method: OrderMethod
    call: OrderCall
    plan: CounterPlan
    now: int
    shadowed: tuple[Denial, ...]
    started: int
    request_id: str


ORDER_METHODS: Mapping[str, OrderMethod] = {
    m.path: m
    for m in (
        OrderMethod("PlaceOrder", pb.PlaceOrderRequest, parse_place, pb.PlaceOrderResponse),
        OrderMethod("CancelOrder", pb.CancelOrderRequest, parse_cancel, pb.CancelOrderResponse),
        OrderMethod("AmendOrder", pb.AmendOrderRequest, parse_amend, pb.AmendOrderResponse),
    )
}


class PreTradeEngine:
    """Screens order-entry calls. Flag refusals are decided locally and touch no network;
    calls that pass them make one counter call (when any behavioural limit applies).

    Every call's decision (accept, refuse or shadow, the stage that decided,
    local and Redis latency) goes to ``sink``.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        checks: Sequence[Check] | None = None,
        clock: Callable[[], int] = now_ms,
        counters: CounterGate | None = None,
        sink: DecisionSink | None = None,
        evidence: EvidenceRecorder | None = None,
        auth: ApiKeyAuth | None = None,
    ) -> None:
        self.snapshot = snapshot
        #: API key checks; None only when authentication is switched off.
        self.auth = auth
        self._checks: tuple[Check, ...] = tuple(
            checks if checks is not None else default_checks(snapshot)
        )
        self._clock = clock
        self.counters = counters
        self.sink: DecisionSink = sink if sink is not None else NullSink()
        self.shadow = ShadowRules(snapshot)
        self.request_ids = RequestIds()
        #: Records which accounts each device and IP is seen with (off the hot path).
        self.evidence = evidence

    def check_local(self, call: OrderCall) -> Denial | None:
        """The local checks alone (no shadow mode, no reporting): the first refusal."""
        now = self._clock()
        for check in self._checks:
            denial = check(call, now)
            if denial is not None:
                return denial
        return None

    async def admit(
        self,
        method: OrderMethod,
        request: Any,
        metadata: Metadata | None = None,
        request_id: str = "",
        peer: str = "",
    ) -> Denial | Admission:
        """Validate a parsed request (and its call metadata), decide on it, report the decision.

        ``peer`` is the caller's address as gRPC gives it (``context.peer()``).
        An :class:`Admission` carries response metadata (the remaining budget)
        and wants to hear the upstream's answer (``accepted``/``accepted_bytes``).
        A denial whose rule is shadowed does not refuse: it is recorded and the
        remaining checks still run, so shadowing one rule never lets a call
        past another. A shadowed counter refusal consumes nothing.
        """
        decided = self._start(method, request, metadata, request_id, peer)
        if type(decided) is _Counting:
            return await self._count(decided)
        return decided  # type: ignore[return-value]

    def _start(
        self,
        method: OrderMethod,
        request: Any,
        metadata: Metadata | None,
        request_id: str,
        peer: str,
    ) -> Denial | Admission | _Counting:
        started = perf_counter_ns()
        key = self._authenticate(metadata)
        if isinstance(key, Denial):
            return self._validation_failed(method, request, key, started, request_id, Stage.AUTH)
        return self._decide(method, request, metadata, request_id, key, started, peer)

    def _authenticate(self, metadata: Metadata | None) -> ApiKey | Denial | None:
        return None if self.auth is None else self.auth.authenticate(metadata)

    def _decide(
        self,
        method: OrderMethod,
        request: Any,
        metadata: Metadata | None,
        request_id: str,
        key: ApiKey | None,
        started: int,
        peer: str,
    ) -> Denial | Admission | _Counting:
        """Everything decided without I/O. Plain code, no coroutine: a refusal by the
        flags returns from here; a call the counters must see comes back as a
        :class:`_Counting` for :meth:`_count`."""
        if key is not None:
            channel = key.channel  # the key's channel, never the caller's own claim
        else:
            claimed = parse_channel(metadata)
            if isinstance(claimed, Denial):
                return self._validation_failed(method, request, claimed, started, request_id)
            channel = claimed
        call = method.parse(request, channel)
        if isinstance(call, Denial):
            return self._validation_failed(method, request, call, started, request_id)
        if key is not None:
            mismatch = authorize(key, call)
            if mismatch is not None:
                return self._validation_failed(
                    method, request, mismatch, started, request_id, Stage.AUTH
                )
        if self.evidence is not None:
            seen = self.evidence.read(metadata, peer)
            if isinstance(seen, Denial):
                return self._validation_failed(method, request, seen, started, request_id)
            self.evidence.observe(call.account_id, seen)
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
        if denial is None and self.counters is not None:
            plan = self.counters.plan(call)
            if plan is not None:
                return _Counting(method, call, plan, now, shadowed, started, request_id)
        return self._report(
            method, call, now, denial, shadowed, ADMITTED, started, perf_counter_ns(), 0,
            request_id,
        )  # fmt: skip

    async def _count(self, pending: _Counting) -> Denial | Admission:
        """The one counter call, then the report."""
        assert self.counters is not None
        local_done = perf_counter_ns()
        counted = await self.counters.consume(pending.call, pending.plan)
        redis_ns = perf_counter_ns() - local_done
        denial: Denial | None = None
        shadowed = pending.shadowed
        verdict: Admission = ADMITTED
        if isinstance(counted, Denial):
            if self._shadowed(counted, pending.now):
                shadowed += (counted,)
            else:
                denial = counted
        else:
            verdict = counted
        return self._report(
            pending.method, pending.call, pending.now, denial, shadowed, verdict,
            pending.started, local_done, redis_ns, pending.request_id,
        )  # fmt: skip

    def _report(
        self,
        method: OrderMethod,
        call: OrderCall,
        now: int,
        denial: Denial | None,
        shadowed: tuple[Denial, ...],
        verdict: Admission,
        started: int,
        local_done: int,
        redis_ns: int,
        request_id: str,
    ) -> Denial | Admission:
        if denial is None:
            verdict = observe_admission(self.snapshot, call, verdict, method.response_type)
            if shadowed:
                outcome, reported = _SHADOW, shadowed[0]
            else:
                outcome, reported = _ACCEPT, None
        else:
            outcome, reported = _REFUSE, denial
        self.sink.decision(
            _new_decision(Decision, (
                request_id or self.request_ids.next(), now, method.name, call.account_id,
                call.symbol, outcome, reported, shadowed,
                _REDIS if redis_ns else _LOCAL, local_done - started, redis_ns, call,
            ))
        )  # fmt: skip
        return denial if denial is not None else verdict

    async def admit_bytes(
        self,
        method: OrderMethod,
        raw: bytes,
        metadata: Metadata | None = None,
        request_id: str = "",
        peer: str = "",
    ) -> Denial | Admission:
        """Like :meth:`admit` for a request still in wire form (the proxy's case).

        The credential is checked before the bytes are even decoded.
        """
        started = perf_counter_ns()
        key = self._authenticate(metadata)
        if isinstance(key, Denial):
            return self._validation_failed(method, None, key, started, request_id, Stage.AUTH)
        try:
            request = method.request_type.FromString(raw)
        except DecodeError:
            return self._validation_failed(method, None, _UNDECODABLE, started, request_id)
        decided = self._decide(method, request, metadata, request_id, key, started, peer)
        if type(decided) is _Counting:
            return await self._count(decided)
        return decided  # type: ignore[return-value]

    def refuse_undecodable(
        self, method: OrderMethod, metadata: Metadata | None, request_id: str = ""
    ) -> Denial:
        """The answer to bytes that are not a request: unauthenticated callers learn no more."""
        started = perf_counter_ns()
        key = self._authenticate(metadata)
        if isinstance(key, Denial):
            return self._validation_failed(method, None, key, started, request_id, Stage.AUTH)
        return self._validation_failed(method, None, _UNDECODABLE, started, request_id)

    async def screen(
        self,
        method: OrderMethod,
        request: Any,
        metadata: Metadata | None = None,
        request_id: str = "",
    ) -> Denial | None:
        """:meth:`admit`, keeping only the refusal."""
        decided = self._start(method, request, metadata, request_id, "")
        if type(decided) is _Counting:
            decided = await self._count(decided)
        return decided if isinstance(decided, Denial) else None

    async def screen_bytes(
        self,
        method: OrderMethod,
        raw: bytes,
        metadata: Metadata | None = None,
        request_id: str = "",
    ) -> Denial | None:
        verdict = await self.admit_bytes(method, raw, metadata, request_id)
        return verdict if isinstance(verdict, Denial) else None

    def _shadowed(self, denial: Denial, now: int) -> bool:
        """The one place shadow mode is applied, for every stage and every reason."""
        return self.shadow.covers(denial.reason, now)

    def _validation_failed(
        self,
        method: OrderMethod,
        request: Any,
        denial: Denial,
        started: int,
        request_id: str,
        stage: Stage = Stage.VALIDATION,
    ) -> Denial:
        self.sink.decision(
            Decision(
                request_id or self.request_ids.next(), self._clock(), method.name,
                str(getattr(request, "account_id", ""))[:64],
                str(getattr(request, "symbol", ""))[:32],
                Outcome.REFUSE, denial, (), stage, perf_counter_ns() - started, 0, None,
            )
        )  # fmt: skip
        return denial


_UNDECODABLE = invalid(FieldViolation("request", "not a valid protobuf message"))


def default_checks(snapshot: Snapshot) -> tuple[Check, ...]:
    # The kill switch first: an emergency stop outranks every other reason.
    return (
        kill_switch_check(snapshot),
        account_state_check(snapshot),
        symbol_state_check(snapshot),
        *order_sanity_checks(snapshot),
        self_trade_check(snapshot),
    )


class Gatekeeper:
    """The engine plus everything that keeps its snapshot current, with one lifecycle.

    Use :meth:`open` to connect and load, :meth:`close` to stop::

        keeper = await Gatekeeper.open("redis://127.0.0.1:6380/0", load_policy("limits"))
        server = grpc.aio.server(interceptors=[PreTradeInterceptor(keeper.engine)])
    """

    def __init__(
        self,
        redis: RedisClient,
        follower_redis: PubSubSource,
        policy: Policy,
        ops: OpsConfig | None = None,
        trusted_proxy_header: str | None = None,
        *,
        failure: FailurePolicy | None = None,
        idempotency_window_ms: int = DEFAULT_WINDOW_MS,
        auth: bool = True,
        pipe: AutoPipeline | None = None,
        audit_pipe: AutoPipeline | None = None,
        load_pipe: AutoPipeline | None = None,
    ) -> None:
        self.redis = redis
        #: Connections of their own to a single Redis (None: ``redis`` serves instead): the
        #: order path's, the audit trail's and the snapshot loads', so audit batches and
        #: full loads never queue in front of an order's counter call.
        self.pipe = pipe
        self.audit_pipe = audit_pipe
        self.load_pipe = load_pipe
        self.policy = policy
        self.snapshot = Snapshot(policy.symbols, policy.products)
        self.flags = FlagStore(redis, bulk=load_pipe)
        #: Linked-account membership writes (guarded, one script per account).
        self.memberships = GroupStore(redis, self.flags.channel)
        self.failure = failure if failure is not None else FailurePolicy()
        self.counters = CounterGate(
            RedisCounterStore(pipe or RedisPyCommands(redis)),
            LimitResolver(self.snapshot, policy.counters),
            subject_of=self._counting_subject,
            reference_price=self._reference_price,
            failure=self.failure,
            idempotency_window_ms=idempotency_window_ms,
        )
        self.evidence = EvidenceRecorder(redis, policy.association, trusted_proxy_header)
        #: Audit trail, metrics and refusal log: the engine reports every decision to them.
        self.ops = Operations(
            redis, self.snapshot, policy.version, ops or OpsConfig(), audit_commands=audit_pipe
        )
        self.engine = PreTradeEngine(
            self.snapshot,
            counters=self.counters,
            sink=self.ops.sink,
            evidence=self.evidence,
            auth=ApiKeyAuth(self.snapshot) if auth else None,
        )
        if not auth:
            warn_auth_off()
        self.engine.request_ids = self.ops.request_ids
        #: Keeps linked accounts' resting orders true (self-trade prevention).
        self.own_orders = OwnOrderSync(self.snapshot)
        self.snapshot.on_reload(freeze_long_lived)
        self._follower_redis = follower_redis
        self.follower = SnapshotFollower(follower_redis, self.flags, self.snapshot)
        self.price_followers: list[ExecutionPriceFollower] = []
        #: Reloads the policy when its files change (started by :meth:`open`).
        self.watcher: PolicyWatcher | None = None
        #: Degraded or not (Redis, snapshot); started by :meth:`open`.
        self.health = StoreHealth(redis, self.snapshot, self.failure.deadline_ms)
        self.counters.observer = self.health.observe
        #: Run by :meth:`close` before the Redis clients close (e.g. an audit flush).
        self.shutdown_hooks = ShutdownHooks()

    @classmethod
    async def open(
        cls,
        redis_url: str,
        policy: Policy,
        watch: bool = True,
        ops: OpsConfig | None = None,
        trusted_proxy_header: str | None = None,
        *,
        failure: FailurePolicy | None = None,
        idempotency_window_ms: int = DEFAULT_WINDOW_MS,
        auth: bool = True,
    ) -> Gatekeeper:
        """Connect (``redis://...`` or ``redis+cluster://...``), load the snapshot, start
        following it, watching the policy files and watching Redis' health.

        ``trusted_proxy_header``: take clients' IPs from this header (its last address)
        instead of the connection; only when a trusted proxy sets it (docs/groups.md).
        ``auth=False`` drops the API key checks: for local development only."""
        deadline_ms = (failure or FailurePolicy()).deadline_ms
        # A call left unanswered for several deadlines means the connection is dead.
        stale_after_ms = max(2000, 4 * deadline_ms)
        redis = hot_client(redis_url, connect_timeout_ms=deadline_ms)
        keeper = cls(
            redis,
            follower_client(redis_url, redis),
            policy,
            ops,
            trusted_proxy_header,
            failure=failure,
            idempotency_window_ms=idempotency_window_ms,
            auth=auth,
            pipe=auto_pipeline(redis_url, deadline_ms, stale_after_ms),
            audit_pipe=auto_pipeline(redis_url, deadline_ms, stale_after_ms),
            load_pipe=auto_pipeline(redis_url, deadline_ms, stale_after_ms),
        )
        try:
            await keeper.follower.start()
            await keeper.ops.start()
        except BaseException:
            await keeper.follower.stop()
            await keeper.ops.stop()
            await keeper._close_clients()
            raise
        keeper.evidence.start()
        if watch and policy.root is not None:
            keeper.watcher = PolicyWatcher(policy, keeper.set_policy)
            keeper.watcher.start()
        keeper.health.start()
        return keeper

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.snapshot.set_policy_specs(policy.symbols, policy.products)
        self.counters.resolver.set_policy(policy.counters)
        self.ops.set_policy_version(policy.version)
        self.evidence.policy = policy.association

    def _counting_subject(self, account_id: str) -> str:
        """The linked group's counters when the account is linked, else its own."""
        return counting_subject(account_id, self.snapshot.groups.group_of(account_id))

    def _reference_price(self, symbol: str) -> Decimal | None:
        """A market order's price for the large-order threshold: the reference in force,
        fresh or not (the last known price beats none)."""
        spec = self.snapshot.symbols.get(symbol)
        if spec is None:
            return None
        found = reference_price(self.snapshot, spec, now_ms())
        return found.price if found is not None else None

    def follow_executions(self, target: str) -> ExecutionPriceFollower:
        """Take reference prices from the trades on ``target``'s ``ExecutionFeed``
        (``host:port``), in a background task that reconnects until :meth:`close`.

        The proxy does this for its upstream; an embedding exchange passes its own
        feed's address, or pushes prices with ``snapshot.trade_prices.observe``.
        The same stream (and the feed's ``ListOpenOrders``) keeps linked accounts'
        resting orders for self-trade prevention.
        """
        follower = ExecutionPriceFollower(
            target, self.snapshot.trade_prices, observers=(self.own_orders,)
        )
        follower.start()
        self.price_followers.append(follower)
        return follower

    async def stop_following_executions(self) -> None:
        for price_follower in self.price_followers:
            await price_follower.stop()
        self.price_followers.clear()

    async def close(self) -> None:
        """Stop everything; call once no more calls are screened (shutdown hooks run first,
        with Redis still connected)."""
        await self.shutdown_hooks.run()
        await self.health.stop()
        await self.ops.stop()  # flushes the audit backlog while Redis is still open
        if self.watcher is not None:
            await self.watcher.stop()
        await self.stop_following_executions()
        await self.own_orders.close()
        await self.follower.stop()
        await self.evidence.stop()
        await self.counters.close()
        await self._close_clients()

    async def _close_clients(self) -> None:
        for pipe in (self.pipe, self.audit_pipe, self.load_pipe):
            if pipe is not None:
                await pipe.aclose()
        await self.redis.aclose()
        await self._follower_redis.aclose()


def warn_auth_off() -> None:
    structlog.get_logger("gateway.auth").warning(
        "auth.off",
        message="ORDER ENTRY AUTHENTICATION IS OFF: anyone who can reach the port can trade "
        "for any account. For local development only.",
    )
