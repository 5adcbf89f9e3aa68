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
from typing import Any, TypeVar

from gateway.groups.tables import GROUP_DECODERS, GROUP_KINDS, GroupTables
from gateway.model import (
    FLAG_KIND_BY_VALUE,
    FlagKind,
    LimitRecord,
    SpecRecord,
    StateRecord,
    SymbolSpec,
    limit_record_from_fields,
    spec_record_from_fields,
    state_record_from_fields,
)
from gateway.ops_records import OPS_DECODERS, OpsRecord
from gateway.records import HotTable
from gateway.refprice import TradePrices
from gateway.stp.book import OwnOrders
from gateway.symbol_limits import ProductSpec

Fields = Mapping[str, str]
RawFlags = Mapping[FlagKind, Mapping[str, Fields]]
_R = TypeVar("_R")


#: Decoded records by kind and id, as :meth:`Snapshot.install` takes them.
Records = Mapping[FlagKind, dict[str, Any]]

#: How each kind's record is read from its Redis fields.
DECODERS: Mapping[FlagKind, Callable[[Fields], Any]] = {
    FlagKind.ACCOUNT_STATE: state_record_from_fields,
    FlagKind.SYMBOL_STATUS: state_record_from_fields,
    FlagKind.SYMBOL_SPEC: spec_record_from_fields,
    FlagKind.LIMIT: limit_record_from_fields,
    FlagKind.KILL_SWITCH: state_record_from_fields,
    FlagKind.SHADOW: state_record_from_fields,
    **OPS_DECODERS,
    **GROUP_DECODERS,
}
assert set(DECODERS) == set(FlagKind), "every kind of flag needs a decoder"


def decode_record(kind: FlagKind, fields: Fields) -> Any:
    """One record as the snapshot holds it; KeyError or ValueError when unreadable."""
    return DECODERS[kind](fields)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Snapshot:
    """Flags by kind and key, plus the symbol specs in force (policy overlaid by admin)."""

    def __init__(
        self,
        policy_specs: Mapping[str, SymbolSpec] | None = None,
        products: Mapping[str, ProductSpec] | None = None,
    ) -> None:
        #: Read through :meth:`HotTable.lookup`: it may hold millions of records.
        self.accounts: HotTable[str, StateRecord] = HotTable()
        self.symbol_status: dict[str, StateRecord] = {}
        self.admin_specs: dict[str, SpecRecord] = {}
        #: Runtime limit overrides by record id; ``limits_generation`` grows with every change.
        self.limit_overrides: dict[str, LimitRecord] = {}
        self.limits_generation = 0
        self.kill_switches: dict[str, StateRecord] = {}
        self.shadow_rules: dict[str, StateRecord] = {}
        self._policy_specs: Mapping[str, SymbolSpec] = dict(policy_specs or {})
        #: Effective spec per symbol: the admin's if any, else the policy's.
        self.symbols: dict[str, SymbolSpec] = dict(self._policy_specs)
        #: Product settings from the policy.
        self.products: dict[str, ProductSpec] = dict(products or {})
        #: Run-time limits set by ops (leverage caps, pinned prices), by kind and key.
        self.ops: dict[FlagKind, dict[str, OpsRecord[Any]]] = {kind: {} for kind in OPS_DECODERS}
        #: The upstream's last trades (this gateway's own, not from Redis).
        self.trade_prices = TradePrices()
        #: Linked accounts and their groups' states (see :mod:`gateway.groups`).
        self.groups = GroupTables()
        #: Linked accounts' resting orders, for self-trade prevention (this gateway's own).
        self.own_orders = OwnOrders()
        #: Wall-clock ms of the last full load or message; 0 before the first load.
        self.last_update_ms = 0
        #: False while the follower is disconnected from Redis (the flags stay in force).
        self.synced = False
        self._listeners: list[Callable[[FlagKind, str], None]] = []
        self._reload_listeners: list[Callable[[], None]] = []
        #: (expires_ms, kind value, key) of each record with a TTL, soonest first, so a
        #: purge visits only what is due instead of every record (10^6 flags: 80-180 ms
        #: a pass). Entries of records replaced since are skipped when they come up.
        self._expiries: list[tuple[int, str, str]] = []

    # -- reads (hot path) -------------------------------------------------

    def account_state(self, account_id: str, at_ms: int) -> StateRecord | None:
        """The account's restriction in force at ``at_ms``, or None when ACTIVE."""
        record = self.accounts.lookup(account_id)
        if record is None or not record.in_force(at_ms):
            return None
        return record

    def symbol_restriction(self, symbol: str, at_ms: int) -> StateRecord | None:
        """The symbol's status in force at ``at_ms``, or None when TRADING."""
        record = self.symbol_status.get(symbol)
        if record is None or not record.in_force(at_ms):
            return None
        return record

    def ops_record(self, kind: FlagKind, key: str, at_ms: int) -> OpsRecord[Any] | None:
        """The run-time limit of ``kind`` for ``key`` in force at ``at_ms``, if any."""
        record = self.ops[kind].get(key)
        if record is None or not record.in_force(at_ms):
            return None
        return record

    # -- writes (follower, admin) -----------------------------------------

    def apply(self, kind: FlagKind, key: str, fields: Fields | None, version: int) -> bool:
        """Apply one change (``fields=None`` deletes); ignore it if older than what we hold."""
        if kind is FlagKind.LIMIT:
            if not self._apply_limit(key, fields, version):
                return False
        elif kind in GROUP_KINDS:
            if not self.groups.apply(kind, key, fields, version):
                return False
        elif kind is FlagKind.SYMBOL_SPEC:
            specs = self.admin_specs
            held = specs.get(key)
            if held is not None and held.version > version:
                return False
            if fields is None:
                specs.pop(key, None)
            else:
                specs[key] = spec_record_from_fields(fields)
        elif kind in self.ops:
            table = self.ops[kind]
            held_ops = table.get(key)
            if held_ops is not None and held_ops.version > version:
                return False
            if fields is None:
                table.pop(key, None)
            else:
                table[key] = OPS_DECODERS[kind](fields)
        else:
            states = self.states_of(kind)
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
        """Swap in a full load of raw fields; returns the ids of records that could not
        be read (they are skipped)."""
        bad: list[str] = []
        self.install({kind: _decode(raw.get(kind, {}), DECODERS[kind], bad) for kind in FlagKind})
        return bad

    @staticmethod
    def empty_tables() -> dict[FlagKind, dict[str, Any]]:
        """Tables for a full load to fill and :meth:`install` to take as they are."""
        tables: dict[FlagKind, dict[str, Any]] = {kind: {} for kind in FlagKind}
        tables[FlagKind.ACCOUNT_STATE] = HotTable()
        return tables

    def install(self, records: Records) -> None:
        """Swap in a full load of decoded records (:func:`decode_record`), after start-up
        or any reconnect. The tables are taken as they are (not copied: a million
        records); kinds absent from ``records`` are left empty."""

        def table(kind: FlagKind) -> dict[str, Any]:
            found = records.get(kind)
            return found if found is not None else {}

        accounts = table(FlagKind.ACCOUNT_STATE)
        self.accounts = accounts if isinstance(accounts, HotTable) else HotTable(accounts)
        self.symbol_status = table(FlagKind.SYMBOL_STATUS)
        self.admin_specs = table(FlagKind.SYMBOL_SPEC)
        self.ops = {kind: table(kind) for kind in OPS_DECODERS}
        self.limit_overrides = table(FlagKind.LIMIT)
        self.limits_generation += 1
        self.kill_switches = table(FlagKind.KILL_SWITCH)
        self.shadow_rules = table(FlagKind.SHADOW)
        self.groups.install(records)
        self._rebuild_symbols()
        self._rebuild_expiries()
        self.last_update_ms = now_ms()
        failed: Exception | None = None
        for listener in self._reload_listeners:  # each one runs, whatever another does
            try:
                listener()
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def set_policy_specs(
        self, specs: Mapping[str, SymbolSpec], products: Mapping[str, ProductSpec] | None = None
    ) -> None:
        self._policy_specs = dict(specs)
        if products is not None:
            self.products = dict(products)
        self._rebuild_symbols()

    def purge_lapsed(self, at_ms: int) -> int:
        """Drop records whose TTL has passed (Redis expires its copies on its own)."""
        dropped = 0
        expiries = self._expiries
        while expiries and expiries[0][0] <= at_ms:
            expires_ms, kind, key = heapq.heappop(expiries)
            table = self._ttl_table(FLAG_KIND_BY_VALUE[kind])
            record = table.get(key) if table is not None else None
            if table is not None and record is not None and record.expires_ms == expires_ms:
                del table[key]
                dropped += 1
        lapsed = [k for k, r in self.limit_overrides.items() if not r.in_force(at_ms)]
        for key in lapsed:
            del self.limit_overrides[key]
        if lapsed:
            self.limits_generation += 1
        return dropped + len(lapsed) + self.groups.purge_lapsed(at_ms)

    def on_change(self, listener: Callable[[FlagKind, str], None]) -> None:
        """Call ``listener(kind, key)`` after every applied change (not after full reloads)."""
        self._listeners.append(listener)

    def on_reload(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every full reload."""
        self._reload_listeners.append(listener)

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

    def account_group(self, account_id: str) -> str:
        """The account's group; always "" until accounts are linked into groups."""
        return ""

    # -- internals --------------------------------------------------------

    def _apply_limit(self, key: str, fields: Fields | None, version: int) -> bool:
        held = self.limit_overrides.get(key)
        if held is not None and held.version > version:
            return False
        if fields is None:
            self.limit_overrides.pop(key, None)
        else:
            self.limit_overrides[key] = limit_record_from_fields(fields)
        self.limits_generation += 1
        return True

    def states_of(self, kind: FlagKind) -> dict[str, StateRecord]:
        if kind is FlagKind.ACCOUNT_STATE:
            return self.accounts
        if kind is FlagKind.KILL_SWITCH:
            return self.kill_switches
        if kind is FlagKind.SHADOW:
            return self.shadow_rules
        return self.symbol_status

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

    def _ttl_table(self, kind: FlagKind) -> dict[str, Any] | None:
        """The table of records of ``kind`` that may lapse (each has ``expires_ms``)."""
        if kind is FlagKind.ACCOUNT_STATE:
            return self.accounts
        if kind is FlagKind.SYMBOL_STATUS:
            return self.symbol_status
        if kind is FlagKind.KILL_SWITCH:
            return self.kill_switches
        if kind is FlagKind.SHADOW:
            return self.shadow_rules
        return self.ops.get(kind)

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
