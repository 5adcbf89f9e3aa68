"""Retries of a PlaceOrder do not spend the rate budget twice.

A place with a ``client_order_id`` that the counter script admits leaves a
record, ``(account, client_order_id) -> admitted``, in the subject's slot for
the idempotency window. A place with the same pair within the window, while
the record is there, is a *retry of an admitted order*: the script lets it
through without counting it again (at most :data:`FREE_RETRIES` times), and
the upstream decides on the duplicate (the reference exchange answers
ALREADY_EXISTS for a live one).

The record is dropped as soon as the upstream gives a definitive answer (the
order was accepted, or refused for a reason a retry will not change): from
then on the same id is a new order and is counted like one. It stays while
the outcome is unknown: the upstream was unavailable or timed out, the call
was cancelled, or the gateway itself gave up on Redis after the script ran.
"""

from __future__ import annotations

import grpc

DEFAULT_WINDOW_MS = 60_000
MAX_WINDOW_MS = 86_400_000
#: Uncounted retries of one admitted client order id (bounds what a client
#: that keeps failing upstream can send for free).
FREE_RETRIES = 3

#: Upstream answers after which the order may or may not exist, or may succeed if
#: retried: the record stays, so the client's retry is not counted again.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)

#: Trailing metadata on a call let through as a retry of an admitted order.
REPLAY_KEY = "x-pretrade-replay"


def check_window_ms(value: int) -> int:
    if value != 0 and not 100 <= value <= MAX_WINDOW_MS:
        raise ValueError(
            f"the idempotency window must be 0 (off) or from 100 to {MAX_WINDOW_MS} ms, not {value}"
        )
    return value


def settles(code: grpc.StatusCode) -> bool:
    """Whether an upstream answer with ``code`` ends the free retries of an order."""
    return code not in RETRYABLE_CODES
