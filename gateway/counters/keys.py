"""Counter key names.

Every key is built from a *counting subject*: the account, or its linked
group when it has one. The subject is the key's ``{...}`` hash tag,
so all counters one order touches live in one Redis Cluster slot and the
counter script can run there. Only :func:`counting_subject` (or whatever
resolver replaces it) decides whose budget an order spends.
"""

from __future__ import annotations

from gateway.counters.limits import LimitKind
from gateway.store.keys import PREFIX


def counting_subject(account_id: str, group_id: str = "") -> str:
    """Whose counters an account's orders spend: its linked group's when it is linked
    (see :mod:`gateway.groups`), else its own."""
    return group_subject(group_id) if group_id else f"acct:{account_id}"


def group_subject(group_id: str) -> str:
    """The counting subject shared by every account linked into ``group_id``."""
    return f"grp:{group_id}"


def rate_key(subject: str, kind: LimitKind, window_ms: int, bucketed: bool = False) -> str:
    """One sliding window of one rate cap (a log and a bucketed window never share a key)."""
    return f"{PREFIX}:{{{subject}}}:rate:{kind.value}:{window_ms}:{'b' if bucketed else 'log'}"


def day_key(subject: str) -> str:
    """The subject's daily tallies (orders, cancels, position-opening orders), one hash."""
    return f"{PREFIX}:{{{subject}}}:day"


def order_record_key(
    subject: str, account_id: str, *, order_id: str = "", client_id: str = ""
) -> str:
    """When an order was admitted, and whether it was large: by order id or client order id.

    Client order ids are unique per account only, so the account is part of
    the key even when several accounts share a subject.
    """
    if order_id:
        return f"{PREFIX}:{{{subject}}}:ord:{account_id}:i:{order_id}"
    return f"{PREFIX}:{{{subject}}}:ord:{account_id}:c:{client_id}"


def idempotency_key(subject: str, account_id: str, client_id: str) -> str:
    """A place admitted with this client order id, within the idempotency window."""
    return f"{PREFIX}:{{{subject}}}:idem:{account_id}:{client_id}"


def subject_pattern(subject: str) -> str:
    """Every counter key of one subject (for inspection and tests)."""
    return f"{PREFIX}:{{{subject}}}:*"
