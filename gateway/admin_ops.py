"""Admin RPCs for operations: kill switch, shadow mode, audit trail.

Mixed into :class:`gateway.admin.AdminService`. Kill switches and shadowed
rules are flags like account states: written to Redis and published in one
script, applied here at once, synced to every other gateway by pub/sub. Every
change is recorded (log line and admin stream) with its request id, which
goes back to the caller in ``x-request-id``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import timestamp_pb2
from grpc import aio
from redis.exceptions import RedisError

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import errors_pb2
from gateway.audit import (
    STREAM_ID_RE,
    Entry,
    action_matcher,
    decision_matcher,
    list_entries,
    newest_id,
    watch_entries,
)
from gateway.decisions import Outcome
from gateway.fields import BadFields
from gateway.killswitch import Scope, parse_scope_key, scope_key
from gateway.model import FlagKind, StateRecord, state_record_from_fields
from gateway.shadow import ALL_RULES, is_rule_name, shadowable_rules
from gateway.snapshot import now_ms
from gateway.store.keys import ADMIN_STREAM, DECISIONS_STREAM
from gateway.validation import ACCOUNT_RE, ACCOUNT_RULE, PRODUCT_RE, PRODUCT_RULE

if TYPE_CHECKING:
    from gateway.engine import Gatekeeper

Context = aio.ServicerContext[Any, Any]

# The same bounds as the other admin changes.
DEFAULT_PAGE = 100
MAX_PAGE = 1000

_DECISION_BY_PB = {
    apb.DECISION_ACCEPT: Outcome.ACCEPT,
    apb.DECISION_REFUSE: Outcome.REFUSE,
    apb.DECISION_SHADOW: Outcome.SHADOW,
}
_PB_BY_DECISION = {v.value: k for k, v in _DECISION_BY_PB.items()}
_GROUP_NOTE = (
    "group kill switch recorded and synced; it matches no account until accounts are "
    "linked into groups"
)


class OpsAdmin:
    """The operations RPCs; expects ``self._keeper``."""

    _keeper: Gatekeeper

    async def _audit(
        self,
        context: Any,
        action: str,
        actor: str,
        reason: str,
        target: str,
        old: str,
        new: str,
        ttl_ms: int = 0,
    ) -> None:
        await self._keeper.ops.admin_action(
            context, action, actor, reason, target, old, new, ttl_ms
        )

    # -- kill switch ----------------------------------------------------------------

    async def KillSwitch(
        self, request: apb.KillSwitchRequest, context: Context
    ) -> apb.KillSwitchResponse:
        v = _Fields()
        scope = v.scope(request.scope, request.id)
        v.change_meta(request.reason, request.actor)
        ttl_ms = v.ttl(request)
        await v.abort_if_any(context)
        assert scope is not None
        if scope is Scope.PRODUCT and request.id not in self._products():
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown product {request.id}: known are {', '.join(sorted(self._products()))}",
            )
        key = scope_key(scope, request.id)
        fields = {"value": "1", "reason": request.reason, "actor": request.actor}
        old, new = await self._write_flag(FlagKind.KILL_SWITCH, key, fields, ttl_ms)
        await self._audit(
            context, "kill_switch", request.actor, request.reason, key,
            "engaged" if old else "released", "engaged", ttl_ms,
        )  # fmt: skip
        assert new is not None
        return apb.KillSwitchResponse(
            kill_switch=_kill_switch(key, state_record_from_fields(new)),
            was_engaged=old is not None,
            note=_GROUP_NOTE if scope is Scope.GROUP else "",
        )

    async def ReleaseKillSwitch(
        self, request: apb.ReleaseKillSwitchRequest, context: Context
    ) -> apb.ReleaseKillSwitchResponse:
        v = _Fields()
        scope = v.scope(request.scope, request.id)
        v.change_meta(request.reason, request.actor)
        await v.abort_if_any(context)
        assert scope is not None
        key = scope_key(scope, request.id)
        old, _ = await self._write_flag(FlagKind.KILL_SWITCH, key, None, 0)
        await self._audit(
            context, "release_kill_switch", request.actor, request.reason, key,
            "engaged" if old else "released", "released",
        )  # fmt: skip
        response = apb.ReleaseKillSwitchResponse(was_engaged=old is not None)
        if old:
            response.released.CopyFrom(_kill_switch(key, state_record_from_fields(old)))
        return response

    async def ListKillSwitches(
        self, request: apb.ListKillSwitchesRequest, context: Context
    ) -> apb.ListKillSwitchesResponse:
        now = now_ms()
        switches = self._keeper.snapshot.kill_switches
        return apb.ListKillSwitchesResponse(
            kill_switches=[
                _kill_switch(key, record)
                for key, record in sorted(switches.items())
                if record.in_force(now)
            ]
        )

    # -- shadow mode ----------------------------------------------------------------

    async def SetShadow(
        self, request: apb.SetShadowRequest, context: Context
    ) -> apb.SetShadowResponse:
        v = _Fields()
        if not is_rule_name(request.rule):
            v.add("rule", "a shadowable refusal reason or *: " + " ".join(shadowable_rules()))
        v.change_meta(request.reason, request.actor)
        ttl_ms = v.ttl(request, "" if request.enabled else "a TTL only applies when enabling")
        await v.abort_if_any(context)
        fields = None
        if request.enabled:
            fields = {"value": "1", "reason": request.reason, "actor": request.actor}
        old, new = await self._write_flag(FlagKind.SHADOW, request.rule, fields, ttl_ms)
        await self._audit(
            context, "set_shadow", request.actor, request.reason, request.rule,
            "shadow" if old else "enforce", "shadow" if request.enabled else "enforce", ttl_ms,
        )  # fmt: skip
        response = apb.SetShadowResponse(was_enabled=old is not None)
        if new is not None:
            response.rule.CopyFrom(_shadow_rule(request.rule, state_record_from_fields(new)))
        return response

    async def ListShadowRules(
        self, request: apb.ListShadowRulesRequest, context: Context
    ) -> apb.ListShadowRulesResponse:
        now = now_ms()
        rules = self._keeper.snapshot.shadow_rules
        return apb.ListShadowRulesResponse(
            rules=[
                _shadow_rule(key, record)
                for key, record in sorted(rules.items())
                if record.in_force(now)
            ],
            shadowable=shadowable_rules(),
        )

    # -- audit trail ------------------------------------------------------------------

    async def ListDecisions(
        self, request: apb.ListDecisionsRequest, context: Context
    ) -> apb.ListDecisionsResponse:
        v = _Fields()
        match = v.decision_filter(request)
        page_size = v.page(request.page_size, request.page_token)
        since, until = v.time_range(request)
        await v.abort_if_any(context)
        entries, token = await self._list(
            context, DECISIONS_STREAM, match, page_size, request.page_token, since, until
        )
        return apb.ListDecisionsResponse(
            decisions=[decision_record(e) for e in entries], next_page_token=token
        )

    async def WatchDecisions(
        self, request: apb.WatchDecisionsRequest, context: Context
    ) -> AsyncIterator[apb.DecisionRecord]:
        v = _Fields()
        match = v.decision_filter(request)
        if request.after_id and not STREAM_ID_RE.fullmatch(request.after_id):
            v.add("after_id", "a record id from this API (e.g. 1718000000000-0)")
        await v.abort_if_any(context)
        redis = self._keeper.redis
        try:
            start = request.after_id or await newest_id(redis, DECISIONS_STREAM)
            # Headers go out once the start is fixed: a client that awaits them
            # knows that everything recorded from then on will reach it.
            await context.send_initial_metadata(())
            async for entry in watch_entries(redis, DECISIONS_STREAM, match, start):
                yield decision_record(entry)
        except (RedisError, OSError) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"audit stream unreachable: {exc}")

    async def ListAdminActions(
        self, request: apb.ListAdminActionsRequest, context: Context
    ) -> apb.ListAdminActionsResponse:
        v = _Fields()
        for name in ("actor", "action", "target"):
            v.text(name, getattr(request, name))
        page_size = v.page(request.page_size, request.page_token)
        since, until = v.time_range(request)
        await v.abort_if_any(context)
        match = action_matcher(request.actor, request.action, request.target)
        entries, token = await self._list(
            context, ADMIN_STREAM, match, page_size, request.page_token, since, until
        )
        return apb.ListAdminActionsResponse(
            actions=[admin_action(e) for e in entries], next_page_token=token
        )

    # -- helpers ----------------------------------------------------------------------

    async def _list(
        self,
        context: Context,
        stream: str,
        match: Any,
        page_size: int,
        token: str,
        since: int | None,
        until: int | None,
    ) -> tuple[list[Entry], str]:
        try:
            return await list_entries(
                self._keeper.redis, stream, match, page_size, token, since, until
            )
        except (RedisError, OSError) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"audit stream unreachable: {exc}")
            raise AssertionError("unreachable") from None  # pragma: no cover

    async def _write_flag(
        self, kind: FlagKind, key: str, fields: Mapping[str, str] | None, ttl_ms: int
    ) -> tuple[dict[str, str] | None, dict[str, str] | None]:
        result = await self._keeper.flags.write(kind, key, fields, ttl_ms)
        self._keeper.snapshot.apply(kind, key, result.new, result.version)
        return result.old, result.new

    def _products(self) -> set[str]:
        return {spec.product for spec in self._keeper.snapshot.symbols.values()}


class _Fields(BadFields):
    """The admin service's collector, with the operations' own rules."""

    def scope(self, value: int, ident: str) -> Scope | None:
        if value not in Scope._value2member_map_:
            self.add("scope", "required: VENUE, PRODUCT, ACCOUNT or GROUP")
            return None
        scope = Scope(value)
        if scope is Scope.VENUE:
            if ident:
                self.add("id", "must be empty for the VENUE scope")
        elif not ident:
            self.add("id", f"required for the {scope.name} scope")
        elif scope is Scope.PRODUCT:
            if PRODUCT_RE.fullmatch(ident) is None:
                self.add("id", PRODUCT_RULE)
        elif len(ident) > 64 or ACCOUNT_RE.fullmatch(ident) is None:
            self.add("id", ACCOUNT_RULE)
        return scope

    def decision_filter(self, request: Any) -> Any:
        for name in ("account_id", "group_id", "symbol"):
            self.text(name, getattr(request, name))
        reason = ""
        if request.reason:
            try:
                reason = errors_pb2.Reason.Name(request.reason).removeprefix("REASON_")
            except ValueError:
                self.add("reason", "unknown reason")
        decision = ""
        if request.decision:
            outcome = _DECISION_BY_PB.get(request.decision)
            if outcome is None:
                self.add("decision", "unknown decision")
            else:
                decision = outcome.value
        return decision_matcher(
            request.account_id, request.group_id, request.symbol, reason, decision
        )

    def page(self, page_size: int, token: str) -> int:
        if page_size > MAX_PAGE:
            self.add("page_size", f"at most {MAX_PAGE}")
        if token and not STREAM_ID_RE.fullmatch(token):
            self.add("page_token", "not a token from this API")
        return page_size or DEFAULT_PAGE

    def time_range(self, request: Any) -> tuple[int | None, int | None]:
        since = request.since.ToMilliseconds() if request.HasField("since") else None
        until = request.until.ToMilliseconds() if request.HasField("until") else None
        if since is not None and since < 0:
            self.add("since", "must not be before 1970")
        if until is not None and until <= 0:
            self.add("until", "must be after 1970")
        if since is not None and until is not None and until <= since:
            self.add("until", "must be after since")
        return since, until


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def _kill_switch(key: str, record: StateRecord) -> apb.KillSwitchState:
    scope, ident = parse_scope_key(key)
    message = apb.KillSwitchState(
        scope=int(scope),  # type: ignore[arg-type]
        id=ident,
        reason=record.reason,
        actor=record.actor,
        engaged_at=_timestamp(record.updated_ms),
    )
    if record.expires_ms:
        message.expires_at.CopyFrom(_timestamp(record.expires_ms))
    return message


def _shadow_rule(rule: str, record: StateRecord) -> apb.ShadowRule:
    message = apb.ShadowRule(
        rule=rule, reason=record.reason, actor=record.actor,
        updated_at=_timestamp(record.updated_ms),
    )  # fmt: skip
    if record.expires_ms:
        message.expires_at.CopyFrom(_timestamp(record.expires_ms))
    return message


def _reason_number(name: str) -> int:
    if not name:
        return 0
    try:
        return int(errors_pb2.Reason.Value(f"REASON_{name}"))
    except ValueError:  # written by a newer gateway
        return 0


def decision_record(entry: Entry) -> apb.DecisionRecord:
    entry_id, f = entry
    record = apb.DecisionRecord(
        id=entry_id,
        time=_timestamp(_int(f.get("ts"))),
        instance=f.get("in", ""),
        request_id=f.get("rid", ""),
        method=f.get("m", ""),
        account_id=f.get("a", ""),
        group_id=f.get("g", ""),
        symbol=f.get("s", ""),
        decision=_PB_BY_DECISION.get(f.get("d", ""), apb.DECISION_UNSPECIFIED),
        reason=_reason_number(f.get("r", "")),  # type: ignore[arg-type]
        message=f.get("msg", ""),
        limit=f.get("l", ""),
        policy_version=f.get("pv", ""),
        shadowed=[_reason_number(r) for r in f.get("sh", "").split(",") if r],  # type: ignore[misc]
        stage=f.get("st", ""),
        local_us=min(_int(f.get("lu")), 2**32 - 1),
        redis_us=min(_int(f.get("ru")), 2**32 - 1),
    )
    if f.get("md"):
        try:
            detail = json.loads(f["md"])
            record.detail.update({str(k): str(v) for k, v in detail.items()})
        except (ValueError, AttributeError):
            pass
    return record


def admin_action(entry: Entry) -> apb.AdminAction:
    entry_id, f = entry
    return apb.AdminAction(
        id=entry_id,
        time=_timestamp(_int(f.get("ts"))),
        instance=f.get("in", ""),
        request_id=f.get("rid", ""),
        action=f.get("act", ""),
        actor=f.get("actor", ""),
        reason=f.get("why", ""),
        target=f.get("tgt", ""),
        old_value=f.get("old", ""),
        new_value=f.get("new", ""),
        ttl_ms=_int(f.get("ttl")),
        principal=f.get("who", ""),
    )


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


__all__ = ["ALL_RULES", "OpsAdmin", "admin_action", "decision_record"]
