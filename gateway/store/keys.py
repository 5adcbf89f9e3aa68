"""Redis key names, in one place.

Every key of one account (or symbol) carries its id in a ``{...}`` hash tag, so
all keys a script touches for it live in one Redis Cluster slot.
"""

from __future__ import annotations

from gateway.model import FLAG_KIND_BY_VALUE, FlagKind

PREFIX = "pt"
#: Pub/sub channel on which every flag change is announced.
CHANGES_CHANNEL = f"{PREFIX}:changes"


#: Audit streams: order decisions, and admin changes (kept apart: far fewer, kept longer).
DECISIONS_STREAM = f"{PREFIX}:audit:decisions"
ADMIN_STREAM = f"{PREFIX}:audit:admin"


def flag_key(kind: FlagKind, record_id: str) -> str:
    return f"{PREFIX}:{kind.value}:{{{record_id}}}"


#: Matches every flag key (``pt:<kind>:{<id>}``); other keys named like it are skipped
#: by :func:`parse_flag_key`.
ALL_FLAGS_PATTERN = f"{PREFIX}:*:{{*}}"


def parse_flag_key(key: str) -> tuple[FlagKind, str] | None:
    """The kind and record id of a flag key; None for any other key."""
    head, sep, rest = key.partition(":")
    if head != PREFIX or not sep:
        return None
    value, sep, tagged = rest.partition(":")
    kind = FLAG_KIND_BY_VALUE.get(value)
    if kind is None or len(tagged) < 2 or tagged[0] != "{" or tagged[-1] != "}":
        return None
    return kind, tagged[1:-1]
