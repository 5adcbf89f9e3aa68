"""The Admin service: ops change flags here; every gateway on the same Redis enforces them.

Each change is written to Redis and published in one script, applied to this
gateway's snapshot at once (the others get it by pub/sub), and logged with
who made it, why, and the old and new values. Reads of single records come
from Redis (the source of truth); ``ListRestrictions`` shows this gateway's
snapshot, i.e. what it enforces right now.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import grpc
import structlog
from google.protobuf import timestamp_pb2
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import admin_pb2_grpc
from gateway.admin_keys import ApiKeyAdmin
from gateway.admin_ops import OpsAdmin
from gateway.admin_sanity import (
    fill_account,
    fill_symbol,
    set_leverage_limit,
    set_reference_price,
    spec_to_proto,
    upsert_spec,
)
from gateway.association.admin import SuspectAdmin
from gateway.counters.admin import LimitAdmin
from gateway.engine import Gatekeeper
from gateway.fields import BadFields, ttl_not_for
from gateway.groups.admin import GroupAdmin, fill_account_group
from gateway.model import (
    AccountState,
    FlagKind,
    StateRecord,
    SymbolStatus,
    state_record_from_fields,
)
from gateway.reasons import FieldViolation
from gateway.refusals import abort_invalid
from gateway.snapshot import now_ms
from gateway.store import WriteResult
from gateway.validation import (
    ACCOUNT_RE,
    ACCOUNT_RULE,
    SYMBOL_RE,
    SYMBOL_RULE,
)

log = structlog.get_logger("gateway.admin")

DEFAULT_PAGE = 100
MAX_PAGE = 1000
Context = aio.ServicerContext[Any, Any]


class AdminService(
    LimitAdmin, OpsAdmin, GroupAdmin, SuspectAdmin, ApiKeyAdmin, admin_pb2_grpc.AdminServicer
):
    def __init__(self, keeper: Gatekeeper) -> None:
        self._keeper = keeper

    # -- accounts -----------------------------------------------------------

    async def SetAccountState(
        self, request: apb.SetAccountStateRequest, context: Context
    ) -> apb.SetAccountStateResponse:
        if request.group_id:
            return await self._set_group_state(request, context)
        v = BadFields()
        v.ident("account_id", request.account_id, ACCOUNT_RE, ACCOUNT_RULE)
        if request.state not in AccountState._value2member_map_:
            v.add("state", "required: ACTIVE, REDUCE_ONLY, FROZEN or DEACTIVATED")
        v.change_meta(request.reason, request.actor)
        ttl_ms = v.ttl(request, ttl_not_for("ACTIVE", int(request.state) == AccountState.ACTIVE))
        await v.abort_if_any(context)

        state = AccountState(request.state)
        fields = None if state is AccountState.ACTIVE else _state_fields(state, request)
        result = await self._write(FlagKind.ACCOUNT_STATE, request.account_id, fields, ttl_ms)
        previous = _state_of(result.old, AccountState.ACTIVE)
        await self._audit(
            context, "set_account_state", request.actor, request.reason, request.account_id,
            previous.name, state.name, ttl_ms,
        )  # fmt: skip
        account = _account(request.account_id, result.new)
        fill_account_group(account, self._keeper.snapshot, request.account_id)
        return apb.SetAccountStateResponse(
            account=account,
            previous_state=int(previous),  # type: ignore[arg-type]
        )

    async def GetAccount(
        self, request: apb.GetAccountRequest, context: Context
    ) -> apb.GetAccountResponse:
        v = BadFields()
        v.ident("account_id", request.account_id, ACCOUNT_RE, ACCOUNT_RULE)
        await v.abort_if_any(context)
        fields = await self._keeper.flags.read(FlagKind.ACCOUNT_STATE, request.account_id)
        account = _account(request.account_id, fields)
        await fill_account(account, self._keeper, request.account_id)
        fill_account_group(account, self._keeper.snapshot, request.account_id)
        return apb.GetAccountResponse(account=account)

    # -- symbols ------------------------------------------------------------

    async def SetSymbolStatus(
        self, request: apb.SetSymbolStatusRequest, context: Context
    ) -> apb.SetSymbolStatusResponse:
        v = BadFields()
        v.ident("symbol", request.symbol, SYMBOL_RE, SYMBOL_RULE)
        if request.status not in SymbolStatus._value2member_map_:
            v.add("status", "required: TRADING, HALTED, REDUCE_ONLY or DELISTED")
        v.change_meta(request.reason, request.actor)
        ttl_ms = v.ttl(request, ttl_not_for("TRADING", int(request.status) == SymbolStatus.TRADING))
        await v.abort_if_any(context)
        if request.symbol not in self._keeper.snapshot.symbols:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown symbol {request.symbol}: declare it in the policy or with UpsertSymbol",
            )

        status = SymbolStatus(request.status)
        fields = None if status is SymbolStatus.TRADING else _state_fields(status, request)
        result = await self._write(FlagKind.SYMBOL_STATUS, request.symbol, fields, ttl_ms)
        previous = _status_of(result.old, SymbolStatus.TRADING)
        await self._audit(
            context, "set_symbol_status", request.actor, request.reason, request.symbol,
            previous.name, status.name, ttl_ms,
        )  # fmt: skip
        return apb.SetSymbolStatusResponse(
            symbol=self._symbol(request.symbol, result.new),
            previous_status=int(previous),  # type: ignore[arg-type]
        )

    async def UpsertSymbol(
        self, request: apb.UpsertSymbolRequest, context: Context
    ) -> apb.UpsertSymbolResponse:
        v = BadFields()
        spec = request.spec
        upserted = upsert_spec(request, self._keeper.snapshot, v)
        v.change_meta(request.reason, request.actor)
        await v.abort_if_any(context)
        if upserted is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown symbol {spec.symbol}: a partial update (update_mask) needs an existing "
                "symbol; send the whole spec to create one",
            )
            raise AssertionError("unreachable")  # pragma: no cover

        new_spec = upserted
        old_spec = self._keeper.snapshot.symbols.get(spec.symbol)
        fields = {**new_spec.to_fields(), "reason": request.reason, "actor": request.actor}
        await self._write(FlagKind.SYMBOL_SPEC, spec.symbol, fields, 0)
        await self._audit(
            context, "upsert_symbol", request.actor, request.reason, spec.symbol,
            json.dumps(old_spec.to_fields(), sort_keys=True) if old_spec else "",
            json.dumps(new_spec.to_fields(), sort_keys=True),
        )  # fmt: skip
        status_fields = await self._keeper.flags.read(FlagKind.SYMBOL_STATUS, spec.symbol)
        return apb.UpsertSymbolResponse(
            symbol=self._symbol(spec.symbol, status_fields), created=old_spec is None
        )

    async def GetSymbol(
        self, request: apb.GetSymbolRequest, context: Context
    ) -> apb.GetSymbolResponse:
        v = BadFields()
        v.ident("symbol", request.symbol, SYMBOL_RE, SYMBOL_RULE)
        await v.abort_if_any(context)
        if request.symbol not in self._keeper.snapshot.symbols:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown symbol {request.symbol}")
        fields = await self._keeper.flags.read(FlagKind.SYMBOL_STATUS, request.symbol)
        return apb.GetSymbolResponse(symbol=self._symbol(request.symbol, fields))

    # -- order limits (gateway/admin_sanity.py) ---------------------------

    async def SetLeverageLimit(
        self, request: apb.SetLeverageLimitRequest, context: Context
    ) -> apb.SetLeverageLimitResponse:
        return await set_leverage_limit(self._keeper, request, context, BadFields())

    async def SetReferencePrice(
        self, request: apb.SetReferencePriceRequest, context: Context
    ) -> apb.SetReferencePriceResponse:
        return await set_reference_price(self._keeper, request, context, BadFields())

    # -- listing ------------------------------------------------------------

    async def ListRestrictions(
        self, request: apb.ListRestrictionsRequest, context: Context
    ) -> apb.ListRestrictionsResponse:
        page_size = request.page_size or DEFAULT_PAGE
        if page_size > MAX_PAGE:
            await abort_invalid(context, [FieldViolation("page_size", f"at most {MAX_PAGE}")])
        try:
            after_account, after_symbol = _decode_token(request.page_token)
        except ValueError:
            await abort_invalid(
                context, [FieldViolation("page_token", "not a token from this API")]
            )
        snapshot = self._keeper.snapshot
        now = now_ms()
        accounts = [
            (key, rec) for key, rec in snapshot.restricted_accounts(now) if key > after_account
        ][: page_size + 1]
        symbols = [
            (key, rec) for key, rec in snapshot.restricted_symbols(now) if key > after_symbol
        ][: page_size + 1]
        more = len(accounts) > page_size or len(symbols) > page_size
        accounts, symbols = accounts[:page_size], symbols[:page_size]
        token = ""
        if more:
            token = _encode_token(
                accounts[-1][0] if accounts else after_account,
                symbols[-1][0] if symbols else after_symbol,
            )
        shown = [_account_from_record(key, rec) for key, rec in accounts]
        for message in shown:
            fill_account_group(message, snapshot, message.account_id)
        return apb.ListRestrictionsResponse(
            accounts=shown,
            symbols=[self._symbol_from_record(key, rec) for key, rec in symbols],
            next_page_token=token,
        )

    # -- helpers ------------------------------------------------------------

    async def _write(
        self, kind: FlagKind, record_id: str, fields: Mapping[str, str] | None, ttl_ms: int
    ) -> WriteResult:
        result = await self._keeper.flags.write(kind, record_id, fields, ttl_ms)
        # Enforce here at once; other gateways get the same change by pub/sub.
        self._keeper.snapshot.apply(kind, record_id, result.new, result.version)
        return result

    def _symbol(self, symbol: str, status_fields: Mapping[str, str] | None) -> apb.Symbol:
        record = state_record_from_fields(status_fields) if status_fields else None
        return self._symbol_from_record(symbol, record)

    def _symbol_from_record(self, symbol: str, record: StateRecord | None) -> apb.Symbol:
        snapshot = self._keeper.snapshot
        spec = snapshot.symbols.get(symbol)
        message = apb.Symbol(
            status=apb.SYMBOL_STATUS_TRADING, spec_source=snapshot.spec_source(symbol)
        )
        if spec is not None:
            message.spec.CopyFrom(spec_to_proto(spec))
            fill_symbol(message, snapshot, symbol, now_ms())
        else:
            message.spec.symbol = symbol
        if record is not None and record.in_force(now_ms()):
            message.status = record.value  # type: ignore[assignment]
            message.status_reason = record.reason
            message.status_actor = record.actor
            message.status_updated_at.CopyFrom(_timestamp(record.updated_ms))
            if record.expires_ms:
                message.status_expires_at.CopyFrom(_timestamp(record.expires_ms))
        return message


def _state_fields(state: AccountState | SymbolStatus, request: Any) -> dict[str, str]:
    return {"value": str(int(state)), "reason": request.reason, "actor": request.actor}


def _state_of(fields: Mapping[str, str] | None, default: AccountState) -> AccountState:
    return AccountState(int(fields["value"])) if fields else default


def _status_of(fields: Mapping[str, str] | None, default: SymbolStatus) -> SymbolStatus:
    return SymbolStatus(int(fields["value"])) if fields else default


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def _account(account_id: str, fields: Mapping[str, str] | None) -> apb.Account:
    record = state_record_from_fields(fields) if fields else None
    return _account_from_record(account_id, record)


def _account_from_record(account_id: str, record: StateRecord | None) -> apb.Account:
    message = apb.Account(account_id=account_id, state=apb.ACCOUNT_STATE_ACTIVE)
    if record is not None and record.in_force(now_ms()):
        message.state = record.value  # type: ignore[assignment]
        message.reason = record.reason
        message.actor = record.actor
        message.updated_at.CopyFrom(_timestamp(record.updated_ms))
        if record.expires_ms:
            message.expires_at.CopyFrom(_timestamp(record.expires_ms))
    return message


def _encode_token(after_account: str, after_symbol: str) -> str:
    raw = f"{after_account}\n{after_symbol}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[str, str]:
    if not token:
        return "", ""
    try:
        raw = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("bad token") from exc
    parts = raw.split("\n")
    if len(parts) != 2:
        raise ValueError("bad token")
    return parts[0], parts[1]
