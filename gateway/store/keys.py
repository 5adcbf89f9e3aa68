"""Redis key names, in one place.

Every key of one account (or symbol) carries its id in a ``{...}`` hash tag, so
all keys a script touches for it live in one Redis Cluster slot.
"""

from __future__ import annotations

from gateway.model import FlagKind

PREFIX = "pt"
#: Pub/sub channel on which every flag change is announced.
CHANGES_CHANNEL = f"{PREFIX}:changes"


#: Audit streams: order decisions, and admin changes (kept apart: far fewer, kept longer).
DECISIONS_STREAM = f"{PREFIX}:audit:decisions"
ADMIN_STREAM = f"{PREFIX}:audit:admin"


def flag_key(kind: FlagKind, record_id: str) -> str:
    return f"{PREFIX}:{kind.value}:{{{record_id}}}"


def flag_pattern(kind: FlagKind) -> str:
    return f"{PREFIX}:{kind.value}:{{*}}"


def record_id_from_key(kind: FlagKind, key: str) -> str:
    prefix = f"{PREFIX}:{kind.value}:{{"
    if not (key.startswith(prefix) and key.endswith("}")):
        raise ValueError(f"not a {kind.value} flag key: {key!r}")
    return key[len(prefix) : -1]
