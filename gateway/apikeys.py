"""Order-entry API keys: their format, their hash, and their record in Redis.

A key is ``<key_id>.<secret>``: ``pk_`` and 16 hex digits, a dot, and 43
URL-safe characters (256 random bits). The key id is public (it names the key
in logs, refusals and admin listings); the secret is shown once, when the key
is issued, and only its SHA-256 is stored. A plain hash is enough here: the
secret is random and long, so there is nothing to guess, and nothing a slow
password hash would protect.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.model import Channel

KEY_ID_PREFIX = "pk_"
KEY_ID_RE = re.compile(r"pk_[0-9a-f]{16}")
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
#: Longest ``authorization`` value looked at; a real one is 70 characters.
MAX_CREDENTIAL_LENGTH = 128
MAX_ACCOUNTS_PER_KEY = 100

Fields = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What the gateway knows about a key: never the secret, only its digest."""

    key_id: str
    #: Hex SHA-256 of the secret.
    digest: str
    accounts: frozenset[str]
    channel: Channel
    label: str = ""
    issued_actor: str = ""
    issued_reason: str = ""
    issued_ms: int = 0
    revoked_ms: int = 0  # 0: not revoked
    revoked_actor: str = ""
    revoked_reason: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_ms != 0


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, api_key)``; ``api_key`` is the full credential to hand out."""
    key_id = KEY_ID_PREFIX + secrets.token_hex(8)
    return key_id, f"{key_id}.{secrets.token_urlsafe(32)}"


def split_key(api_key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` if ``api_key`` has the shape of a key, else None."""
    key_id, dot, secret = api_key.partition(".")
    if not dot or KEY_ID_RE.fullmatch(key_id) is None or SECRET_RE.fullmatch(secret) is None:
        return None
    return key_id, secret


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def api_key_fields(key: ApiKey, reason: str, actor: str) -> dict[str, str]:
    """The key as a flag record (``reason``/``actor``: those of this change)."""
    return {
        "key_id": key.key_id,
        "digest": key.digest,
        "accounts": ",".join(sorted(key.accounts)),
        "channel": key.channel.value,
        "label": key.label,
        "issued_actor": key.issued_actor,
        "issued_reason": key.issued_reason,
        "issued_ms": str(key.issued_ms),
        "revoked_ms": str(key.revoked_ms),
        "revoked_actor": key.revoked_actor,
        "revoked_reason": key.revoked_reason,
        "reason": reason,
        "actor": actor,
    }


def api_key_from_fields(fields: Fields) -> ApiKey:
    """Decode a stored key; raises ``KeyError``/``ValueError`` on a record that is not one."""
    key_id = fields["key_id"]
    digest = fields["digest"]
    if KEY_ID_RE.fullmatch(key_id) is None or re.fullmatch(r"[0-9a-f]{64}", digest) is None:
        raise ValueError(f"not an API key record: {key_id!r}")
    accounts = frozenset(a for a in fields["accounts"].split(",") if a)
    if not accounts:
        raise ValueError(f"API key {key_id} is bound to no account")
    return ApiKey(
        key_id=key_id,
        digest=digest,
        accounts=accounts,
        channel=Channel(fields["channel"]),
        label=fields.get("label", ""),
        issued_actor=fields.get("issued_actor", ""),
        issued_reason=fields.get("issued_reason", ""),
        issued_ms=int(fields.get("issued_ms") or 0),
        revoked_ms=int(fields.get("revoked_ms") or 0),
        revoked_actor=fields.get("revoked_actor", ""),
        revoked_reason=fields.get("revoked_reason", ""),
    )
