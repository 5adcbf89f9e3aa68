"""Order-entry authentication: who sends this call, and may they act for its account?

Runs first in the engine, before any other check, from the in-memory snapshot
alone (no Redis trip). The credential is ``authorization: Bearer <api_key>``
metadata. A key that verified once is remembered (token -> key id and the
digest it matched) in a small bounded table, so the hash is not recomputed
per order; every call still reads the key's current record, so a revoked,
expired, re-bound or deleted key is refused on the very next call.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

from gateway.apikeys import MAX_CREDENTIAL_LENGTH, ApiKey, digest_of, split_key
from gateway.model import FlagKind
from gateway.ops_records import OpsRecord
from gateway.reasons import Denial, Reason
from gateway.snapshot import Snapshot, now_ms
from gateway.validation import OrderCall

#: Request metadata carrying the credential.
AUTHORIZATION_KEY = "authorization"
#: Metadata the proxy adds upstream: the id of the key that was verified.
KEY_ID_METADATA_KEY = "x-pretrade-key-id"
_SCHEME = "bearer "
_CACHE_SIZE = 4096

Metadata = Iterable[tuple[str, str | bytes]]


def unauthenticated(problem: str, message: str, key_id: str = "") -> Denial:
    metadata = {"limit": "api_key", "problem": problem}
    if key_id:
        metadata["key_id"] = key_id
    return Denial(Reason.UNAUTHENTICATED, message, metadata)


_MISSING = unauthenticated(
    "missing", "an API key is required: send authorization: Bearer <api key> metadata"
)
_MALFORMED = unauthenticated(
    "malformed", "malformed authorization: expected one 'Bearer <key_id>.<secret>' value"
)
_UNKNOWN = unauthenticated("unknown", "unknown API key")


def bearer_token(metadata: Metadata | None) -> str | Denial:
    """The one ``Bearer`` credential in ``metadata``, or why there is none."""
    found: str | None = None
    for key, value in metadata or ():
        if key != AUTHORIZATION_KEY:
            continue
        if found is not None or not isinstance(value, str):
            return _MALFORMED
        found = value
    if found is None:
        return _MISSING
    if len(found) > MAX_CREDENTIAL_LENGTH + len(_SCHEME) or found[:7].lower() != _SCHEME:
        return _MALFORMED
    return found[7:].strip()


class ApiKeyAuth:
    """Checks API keys against the snapshot's ``apikey`` records."""

    def __init__(
        self,
        snapshot: Snapshot,
        clock: Callable[[], int] = now_ms,
        cache_size: int = _CACHE_SIZE,
    ) -> None:
        self._snapshot = snapshot
        self._clock = clock
        self._cache_size = cache_size
        #: Verified token -> (key id, the digest it matched).
        self._verified: dict[str, tuple[str, str]] = {}
        snapshot.on_change(self._forget)

    def authenticate(self, metadata: Metadata | None) -> ApiKey | Denial:
        token = bearer_token(metadata)
        if isinstance(token, Denial):
            return token
        keys: dict[str, OpsRecord[Any]] = self._snapshot.ops[FlagKind.API_KEY]
        cached = self._verified.get(token)
        if cached is not None:
            record = keys.get(cached[0])
            if record is None or record.value.digest != cached[1]:
                self._verified.pop(token, None)
                return _UNKNOWN
        else:
            parts = split_key(token)
            if parts is None:
                return _MALFORMED
            record = keys.get(parts[0])
            if record is None:
                return _UNKNOWN
            if not hmac.compare_digest(digest_of(parts[1]), record.value.digest):
                return _UNKNOWN
            if len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = (parts[0], record.value.digest)
        key: ApiKey = record.value
        if key.revoked:
            return unauthenticated("revoked", f"API key {key.key_id} is revoked", key.key_id)
        if not record.in_force(self._clock()):
            return unauthenticated("expired", f"API key {key.key_id} has expired", key.key_id)
        return key

    def _forget(self, kind: FlagKind, key_id: str) -> None:
        # Not needed for correctness (every call re-reads the record), but a revoked
        # key's tokens should not linger in memory.
        if kind is FlagKind.API_KEY:
            for token in [t for t, (k, _) in self._verified.items() if k == key_id]:
                del self._verified[token]


def authorize(key: ApiKey, call: OrderCall) -> Denial | None:
    """Refuse a call for an account the key is not bound to (cancels included)."""
    if call.account_id in key.accounts:
        return None
    return Denial(
        Reason.ACCOUNT_MISMATCH,
        f"API key {key.key_id} may not act for account {call.account_id}",
        {"limit": "api_key", "key_id": key.key_id, "account_id": call.account_id},
    )


def key_id_of(metadata: Metadata | None) -> str:
    """The key id of a call's (already verified) credential, for the upstream's records."""
    token = bearer_token(metadata)
    if isinstance(token, Denial):
        return ""
    return token.partition(".")[0]
