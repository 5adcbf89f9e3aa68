"""Admin RPCs for order-entry API keys, mixed into :class:`gateway.admin.AdminService`.

A key is a flag record (kind ``apikey``, id = key id) written and published
in one script like every other admin change, so every gateway knows it (or
its revocation) within milliseconds. The secret leaves the gateway once, in
the ``IssueApiKey`` response; it is never stored, logged or listed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import timestamp_pb2
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.apikeys import (
    KEY_ID_RE,
    MAX_ACCOUNTS_PER_KEY,
    ApiKey,
    api_key_fields,
    api_key_from_fields,
    digest_of,
    new_key,
    split_key,
)
from gateway.fields import MAX_TEXT, MAX_TTL_DAYS, check_change_meta, check_ttl
from gateway.model import Channel, FlagKind
from gateway.ops_records import OpsRecord
from gateway.reasons import FieldViolation
from gateway.refusals import abort_if_invalid as _abort_if
from gateway.snapshot import now_ms
from gateway.validation import ACCOUNT_RE, ACCOUNT_RULE

if TYPE_CHECKING:  # the engine imports what this module imports
    from gateway.engine import Gatekeeper

Context = aio.ServicerContext[Any, Any]
DEFAULT_PAGE = 100
MAX_PAGE = 1000

_CHANNEL_FROM_PB = {
    apb.ORDER_CHANNEL_PROGRAM: Channel.PROGRAM,
    apb.ORDER_CHANNEL_INTERACTIVE: Channel.INTERACTIVE,
}
_CHANNEL_TO_PB = {v: k for k, v in _CHANNEL_FROM_PB.items()}


class ApiKeyAdmin:
    """``IssueApiKey``, ``RevokeApiKey``, ``ListApiKeys``."""

    _keeper: Gatekeeper

    async def IssueApiKey(
        self, request: apb.IssueApiKeyRequest, context: Context
    ) -> apb.IssueApiKeyResponse:
        bad: list[FieldViolation] = []
        accounts = _accounts(list(request.account_ids), bad)
        channel = _CHANNEL_FROM_PB.get(request.channel)
        if channel is None:
            bad.append(FieldViolation("channel", "required: PROGRAM or INTERACTIVE"))
        if len(request.label) > MAX_TEXT:
            bad.append(FieldViolation("label", f"at most {MAX_TEXT} characters"))
        check_change_meta(bad, request.reason, request.actor)
        ttl_ms = check_ttl(bad, request, max_days=3 * MAX_TTL_DAYS)
        await _abort_if(context, bad)
        assert channel is not None

        key_id, api_key = new_key()
        parts = split_key(api_key)
        assert parts is not None
        key = ApiKey(
            key_id=key_id,
            digest=digest_of(parts[1]),
            accounts=accounts,
            channel=channel,
            label=request.label,
            issued_actor=request.actor,
            issued_reason=request.reason,
            issued_ms=now_ms(),
        )
        result = await self._keeper.flags.write(
            FlagKind.API_KEY, key_id, api_key_fields(key, request.reason, request.actor), ttl_ms
        )
        self._keeper.snapshot.apply(FlagKind.API_KEY, key_id, result.new, result.version)
        await self._keeper.ops.admin_action(
            context, "issue_api_key", request.actor, request.reason, key_id, "", _describe(key),
            ttl_ms,
        )  # fmt: skip
        expires_ms = int((result.new or {}).get("expires_ms", "0"))
        return apb.IssueApiKeyResponse(key=_key_proto(key, expires_ms), api_key=api_key)

    async def RevokeApiKey(
        self, request: apb.RevokeApiKeyRequest, context: Context
    ) -> apb.RevokeApiKeyResponse:
        bad: list[FieldViolation] = []
        if KEY_ID_RE.fullmatch(request.key_id) is None:
            bad.append(FieldViolation("key_id", "required: pk_ and 16 hex digits"))
        check_change_meta(bad, request.reason, request.actor)
        await _abort_if(context, bad)

        flags = self._keeper.flags
        fields = await flags.read(FlagKind.API_KEY, request.key_id)
        if fields is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown API key {request.key_id}")
            raise AssertionError("unreachable")  # pragma: no cover
        held = api_key_from_fields(fields)
        expires_ms = int(fields.get("expires_ms", "0"))
        if held.revoked:
            return apb.RevokeApiKeyResponse(key=_key_proto(held, expires_ms), already_revoked=True)

        now = now_ms()
        key = _revoked(held, now, request.actor, request.reason)
        # Keep the key's own expiry (a revoked record goes when the key would have).
        ttl_ms = max(1, expires_ms - now) if expires_ms else 0
        result = await flags.write(
            FlagKind.API_KEY,
            request.key_id,
            api_key_fields(key, request.reason, request.actor),
            ttl_ms,
        )
        self._keeper.snapshot.apply(FlagKind.API_KEY, request.key_id, result.new, result.version)
        await self._keeper.ops.admin_action(
            context, "revoke_api_key", request.actor, request.reason, request.key_id,
            _describe(held), _describe(key),
        )  # fmt: skip
        return apb.RevokeApiKeyResponse(key=_key_proto(key, expires_ms))

    async def ListApiKeys(
        self, request: apb.ListApiKeysRequest, context: Context
    ) -> apb.ListApiKeysResponse:
        bad: list[FieldViolation] = []
        if request.account_id and ACCOUNT_RE.fullmatch(request.account_id) is None:
            bad.append(FieldViolation("account_id", ACCOUNT_RULE))
        page_size = request.page_size or DEFAULT_PAGE
        if page_size > MAX_PAGE:
            bad.append(FieldViolation("page_size", f"at most {MAX_PAGE}"))
        if request.page_token and KEY_ID_RE.fullmatch(request.page_token) is None:
            bad.append(FieldViolation("page_token", "not a token from this API"))
        await _abort_if(context, bad)

        now = now_ms()
        table: dict[str, OpsRecord[Any]] = self._keeper.snapshot.ops[FlagKind.API_KEY]
        selected = [
            record
            for key_id, record in sorted(table.items())
            if key_id > request.page_token
            and record.in_force(now)
            and (request.include_revoked or not record.value.revoked)
            and (not request.account_id or request.account_id in record.value.accounts)
        ][: page_size + 1]
        more = len(selected) > page_size
        selected = selected[:page_size]
        return apb.ListApiKeysResponse(
            keys=[_key_proto(r.value, r.expires_ms) for r in selected],
            next_page_token=selected[-1].value.key_id if more else "",
        )


def _revoked(key: ApiKey, now: int, actor: str, reason: str) -> ApiKey:
    return replace(key, revoked_ms=now, revoked_actor=actor, revoked_reason=reason)


def _accounts(values: list[str], bad: list[FieldViolation]) -> frozenset[str]:
    if not values:
        bad.append(FieldViolation("account_ids", "required: at least one account"))
    elif len(values) > MAX_ACCOUNTS_PER_KEY:
        bad.append(FieldViolation("account_ids", f"at most {MAX_ACCOUNTS_PER_KEY} accounts"))
        return frozenset()
    seen: set[str] = set()
    for index, value in enumerate(values):
        if ACCOUNT_RE.fullmatch(value) is None:
            bad.append(FieldViolation(f"account_ids[{index}]", ACCOUNT_RULE))
        elif value in seen:
            bad.append(FieldViolation(f"account_ids[{index}]", "listed twice"))
        seen.add(value)
    return frozenset(seen)


def _describe(key: ApiKey) -> str:
    """A key for the audit trail: what it may do, never its secret nor its digest."""
    state = "revoked" if key.revoked else "active"
    label = f" label={json.dumps(key.label)}" if key.label else ""
    return f"{state} accounts={','.join(sorted(key.accounts))} channel={key.channel.value}{label}"


def _key_proto(key: ApiKey, expires_ms: int) -> apb.ApiKey:
    message = apb.ApiKey(
        key_id=key.key_id,
        account_ids=sorted(key.accounts),
        channel=_CHANNEL_TO_PB[key.channel],
        label=key.label,
        issued_by=key.issued_actor,
        issue_reason=key.issued_reason,
        revoked=key.revoked,
        revoked_by=key.revoked_actor,
        revoke_reason=key.revoked_reason,
    )
    if key.issued_ms:
        message.issued_at.CopyFrom(_timestamp(key.issued_ms))
    if expires_ms:
        message.expires_at.CopyFrom(_timestamp(expires_ms))
    if key.revoked_ms:
        message.revoked_at.CopyFrom(_timestamp(key.revoked_ms))
    return message


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
