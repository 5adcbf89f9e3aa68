"""The orders the suite sends, and the flags it writes into Redis.

Accepted orders are IOC limit buys on an empty book: the reference exchange
expires them at once, so its state (and cost per order) stays the same for the
whole run. They rotate over many accounts, so per-account counters (when
present) see realistic per-account rates rather than one hot key.

Flags are written with pipelined HSETs in exactly the record format of
``gateway/store/lua/flag_write.lua`` (same keys, same fields), which is what
every gateway loads at start-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.model import AccountState, FlagKind, SymbolStatus
from gateway.store.keys import flag_key

PLACE_PATH = "/pretrade.v1.OrderEntry/PlaceOrder"
BENCH_SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "BTC-USDT-PERP", "ETH-USDT-PERP")


def active_accounts(count: int) -> list[str]:
    """Accounts that carry no flag: their orders are accepted."""
    return [f"acct-{i:07d}" for i in range(count)]


def flagged_accounts(count: int) -> list[str]:
    return [f"flagged-{i:07d}" for i in range(count)]


def place_order(account: str, symbol: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
        account_id=account,
        symbol=symbol,
        side=pb.SIDE_BUY,
        type=pb.ORDER_TYPE_LIMIT,
        time_in_force=pb.TIME_IN_FORCE_IOC,
        quantity="0.01",
        price="100.5",
    )


def order_pool(
    accounts: Sequence[str], symbols: Sequence[str], size: int
) -> list[pb.PlaceOrderRequest]:
    """``size`` orders cycling over ``accounts`` and ``symbols``."""
    return [
        place_order(accounts[i % len(accounts)], symbols[(i * 7) % len(symbols)])
        for i in range(size)
    ]


def state_fields(value: int, now_ms: int, version: int) -> dict[str, str]:
    return {
        "value": str(value),
        "reason": "bench",
        "actor": "bench",
        "updated_ms": str(now_ms),
        "expires_ms": "0",
        "version": str(version),
    }


def _resp(*parts: str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def write_states(
    url: str,
    kind: FlagKind,
    ids: Iterable[str],
    values: Sequence[int],
    chunk_bytes: int = 1 << 20,
) -> int:
    """Write one state record per id (values cycle) with pipelined HSETs; returns how many.

    The commands are encoded here and streamed on one connection, replies read
    as they come: millions of records in seconds, where a client library's
    per-command overhead would take minutes.
    """
    parsed = urlsplit(url)
    db = (parsed.path or "/0").lstrip("/") or "0"
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port or 6379)
    now_us = time.time_ns() // 1000
    sent = 0
    replies = 0
    buffer = [_resp("SELECT", db)]
    size = 0

    async def read_replies(until: int) -> None:
        nonlocal replies
        while replies < until:
            line = await reader.readline()
            if not line or line.startswith(b"-"):
                raise RuntimeError(f"Redis refused a flag write: {line!r}")
            replies += 1

    try:
        for record_id in ids:
            fields = state_fields(values[sent % len(values)], now_us // 1000, now_us + sent)
            flat = [x for pair in fields.items() for x in pair]
            command = _resp("HSET", flag_key(kind, record_id), *flat)
            buffer.append(command)
            size += len(command)
            sent += 1
            if size >= chunk_bytes:
                writer.write(b"".join(buffer))
                buffer, size = [], 0
                await writer.drain()
                await read_replies(max(0, sent - 50_000))  # keep the backlog bounded
        writer.write(b"".join(buffer))
        await writer.drain()
        await read_replies(sent + 1)  # + SELECT
    finally:
        writer.close()
        await writer.wait_closed()
    return sent


async def flag_accounts(url: str, ids: Iterable[str]) -> int:
    """Restrict accounts: FROZEN, REDUCE_ONLY and DEACTIVATED in turn (all refuse a new order)."""
    values = (AccountState.FROZEN, AccountState.REDUCE_ONLY, AccountState.DEACTIVATED)
    return await write_states(url, FlagKind.ACCOUNT_STATE, ids, [int(v) for v in values])


async def halt_symbols(url: str, symbols: Iterable[str]) -> int:
    return await write_states(url, FlagKind.SYMBOL_STATUS, symbols, [int(SymbolStatus.HALTED)])
