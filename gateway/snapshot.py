"""The in-memory copy of every flag that decides an order without touching the network.

Written only by the follower (pub/sub messages, full reloads) and by this
gateway's own admin writes; read by the hot path with plain dict look-ups.
Every record carries a version, and a record only ever replaces an older one,
so messages and reloads may interleave in any order.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from gateway.model import (
    FlagKind,
    SpecRecord,
    StateRecord,
    SymbolSpec,
    spec_record_from_fields,
    state_record_from_fields,
)

Fields = Mapping[str, str]
RawFlags = Mapping[FlagKind, Mapping[str, Fields]]
_R = TypeVar("_R")
_KIND_BY_VALUE = {kind.value: kind for kind in FlagKind}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Snapshot:
    """Flags by kind and key, plus the symbol specs in force (policy overlaid by admin)."""

    def __init__(self, policy_specs: Mapping[str, SymbolSpec] | None = None) -> None:
        self.accounts: dict[str, StateRecord] = {}
        self.symbol_status: dict[str, StateRecord] = {}
        self.admin_specs: dict[str, SpecRecord] = {}
        self._policy_specs: Mapping[str, SymbolSpec] = dict(policy_specs or {})
        #: Effective spec per symbol: the admin's if any, else the policy's.
        self.symbols: dict[str, SymbolSpec] = dict(self._policy_specs)
        #: Wall-clock ms of the last full load or message; 0 before the first load.
        self.last_update_ms = 0
        #: False while the follower is disconnected from Redis (the flags stay in force).
        self.synced = False
        self._listeners: list[Callable[[FlagKind, str], None]] = []
        #: (expires_ms, kind value, key) of each record with a TTL, soonest first, so a
        #: purge visits only what is due instead of every record (10^6 flags: 80-180 ms
        #: a pass). Entries of records replaced since are skipped when they come up.
        self._expiries: list[tuple[int, str, str]] = []

    # -- reads (hot path) -------------------------------------------------

    def account_state(self, account_id: str, at_ms: int) -> StateRecord | None:
        """The account's restriction in force at ``at_ms``, or None when ACTIVE."""
        record = self.accounts.get(account_id)
        if record is None or not record.in_force(at_ms):
            return None
        return record

    def symbol_restriction(self, symbol: str, at_ms: int) -> StateRecord | None:
        """The symbol's status in force at ``at_ms``, or None when TRADING."""
        record = self.symbol_status.get(symbol)
        if record is None or not record.in_force(at_ms):
            return None
        return record

    # -- writes (follower, admin) -----------------------------------------

    def apply(self, kind: FlagKind, key: str, fields: Fields | None, version: int) -> bool:
        """Apply one change (``fields=None`` deletes); ignore it if older than what we hold."""
        if kind is FlagKind.SYMBOL_SPEC:
            specs = self.admin_specs
            held = specs.get(key)
            if held is not None and held.version > version:
                return False
            if fields is None:
                specs.pop(key, None)
            else:
                specs[key] = spec_record_from_fields(fields)
        else:
            states = self.accounts if kind is FlagKind.ACCOUNT_STATE else self.symbol_status
            current = states.get(key)
            if current is not None and current.version > version:
                return False
            if fields is None:
                states.pop(key, None)
            else:
                states[key] = state_record_from_fields(fields)
        if kind is FlagKind.SYMBOL_SPEC:
            self._refresh_symbol(key)
        if fields is not None:
            self._track_expiry(kind, key)
        self.last_update_ms = now_ms()
        self._notify(kind, key)
        return True

    def replace_all(self, raw: RawFlags) -> list[str]:
        """Swap in a full load from Redis (after start-up or any reconnect).

        Returns the keys of records that could not be read (they are skipped).
        """
        bad: list[str] = []
        self.accounts = _decode(raw.get(FlagKind.ACCOUNT_STATE, {}), state_record_from_fields, bad)
        self.symbol_status = _decode(
            raw.get(FlagKind.SYMBOL_STATUS, {}), state_record_from_fields, bad
        )
        self.admin_specs = _decode(raw.get(FlagKind.SYMBOL_SPEC, {}), spec_record_from_fields, bad)
        self._rebuild_symbols()
        self._rebuild_expiries()
        self.last_update_ms = now_ms()
        return bad

    def set_policy_specs(self, specs: Mapping[str, SymbolSpec]) -> None:
        self._policy_specs = dict(specs)
        self._rebuild_symbols()

    def purge_lapsed(self, at_ms: int) -> int:
        """Drop records whose TTL has passed (Redis expires its copies on its own)."""
        dropped = 0
        expiries = self._expiries
        while expiries and expiries[0][0] <= at_ms:
            expires_ms, kind, key = heapq.heappop(expiries)
            table = self._ttl_table(_KIND_BY_VALUE[kind])
            record = table.get(key) if table is not None else None
            if table is not None and record is not None and record.expires_ms == expires_ms:
                del table[key]
                dropped += 1
        return dropped

    def on_change(self, listener: Callable[[FlagKind, str], None]) -> None:
        """Call ``listener(kind, key)`` after every applied change (not after full reloads)."""
        self._listeners.append(listener)

    # -- views ------------------------------------------------------------

    def restricted_accounts(self, at_ms: int) -> Iterator[tuple[str, StateRecord]]:
        for key in sorted(self.accounts):
            record = self.accounts[key]
            if record.in_force(at_ms):
                yield key, record

    def restricted_symbols(self, at_ms: int) -> Iterator[tuple[str, StateRecord]]:
        for key in sorted(self.symbol_status):
            record = self.symbol_status[key]
            if record.in_force(at_ms):
                yield key, record

    def spec_source(self, symbol: str) -> str:
        if symbol in self.admin_specs:
            return "admin"
        return "policy" if symbol in self._policy_specs else ""

    # -- internals --------------------------------------------------------

    def _refresh_symbol(self, symbol: str) -> None:
        admin = self.admin_specs.get(symbol)
        if admin is not None:
            self.symbols[symbol] = admin.spec
        elif symbol in self._policy_specs:
            self.symbols[symbol] = self._policy_specs[symbol]
        else:
            self.symbols.pop(symbol, None)

    def _rebuild_symbols(self) -> None:
        symbols = dict(self._policy_specs)
        symbols.update({k: r.spec for k, r in self.admin_specs.items()})
        self.symbols = symbols

    def _ttl_table(self, kind: FlagKind) -> dict[str, StateRecord] | None:
        """The table of records of ``kind`` that may lapse (each has ``expires_ms``)."""
        if kind is FlagKind.ACCOUNT_STATE:
            return self.accounts
        if kind is FlagKind.SYMBOL_STATUS:
            return self.symbol_status
        return None

    def _track_expiry(self, kind: FlagKind, key: str) -> None:
        table = self._ttl_table(kind)
        record = table.get(key) if table is not None else None
        if record is None or not record.expires_ms:
            return
        heapq.heappush(self._expiries, (record.expires_ms, kind.value, key))
        if len(self._expiries) > 2 * self._ttl_records() + 1024:
            self._rebuild_expiries()  # mostly entries of replaced records: start afresh

    def _ttl_records(self) -> int:
        return sum(len(table) for kind in FlagKind if (table := self._ttl_table(kind)))

    def _rebuild_expiries(self) -> None:
        self._expiries = [
            (record.expires_ms, kind.value, key)
            for kind in FlagKind
            if (table := self._ttl_table(kind)) is not None
            for key, record in table.items()
            if record.expires_ms
        ]
        heapq.heapify(self._expiries)

    def _notify(self, kind: FlagKind, key: str) -> None:
        for listener in self._listeners:
            listener(kind, key)


def _decode(
    raw: Mapping[str, Fields], decode: Callable[[Fields], _R], bad: list[str]
) -> dict[str, _R]:
    out: dict[str, _R] = {}
    for key, fields in raw.items():
        try:
            out[key] = decode(fields)
        except (KeyError, ValueError):
            bad.append(key)
    return out
