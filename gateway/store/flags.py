"""Flag records in Redis: the admin path's writes and the full loads behind every snapshot."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from gateway.model import FLAG_KIND_BY_VALUE, FlagKind
from gateway.store.commands import Commands, RedisPyCommands, field_map
from gateway.store.keys import ALL_FLAGS_PATTERN, CHANGES_CHANNEL, flag_key, parse_flag_key
from gateway.store.redis_client import RedisClient, scan_keys
from gateway.store.scripts import LuaScript

Fields = dict[str, str]
_R = TypeVar("_R")

#: Records per ``HGETALL`` batch of a full load, and keys a ``SCAN`` step looks at (a
#: step holds Redis, and every gateway's counter calls, for well under a millisecond).
_LOAD_BATCH = 1000
_SCAN_COUNT = 1000


@dataclass(frozen=True, slots=True)
class FlagChange:
    """One announced change: ``fields`` is None when the record was deleted."""

    kind: FlagKind
    record_id: str
    fields: Fields | None
    version: int

    @classmethod
    def decode(cls, payload: str | bytes) -> FlagChange:
        message = json.loads(payload)
        fields = message.get("f")
        return cls(
            kind=FLAG_KIND_BY_VALUE[message["k"]],
            record_id=str(message["id"]),
            fields={str(k): str(v) for k, v in fields.items()} if fields is not None else None,
            version=int(message["v"]),
        )


@dataclass(frozen=True, slots=True)
class WriteResult:
    old: Fields | None
    new: Fields | None
    version: int


class FlagStore:
    """Reads and writes flag hashes; every write is published on :data:`CHANGES_CHANNEL`."""

    def __init__(
        self, redis: RedisClient, channel: str = CHANGES_CHANNEL, bulk: Commands | None = None
    ) -> None:
        """``bulk``: where full loads send their ``HGETALL`` batches (default: ``redis``)."""
        self._redis = redis
        self._bulk: Commands = bulk if bulk is not None else RedisPyCommands(redis)
        self._channel = channel
        self._write_script = LuaScript("flag_write")
        #: Records read by full loads so far: how a caller tells a long load from a stuck one.
        self.records_read = 0

    @property
    def channel(self) -> str:
        return self._channel

    async def write(
        self,
        kind: FlagKind,
        record_id: str,
        fields: Mapping[str, str] | None,
        ttl_ms: int = 0,
    ) -> WriteResult:
        """Set (or, with ``fields=None``, delete) a record and announce it, in one script."""
        args: list[str | int] = [self._channel, kind.value, record_id, ttl_ms]
        if fields is None:
            args.append("del")
        else:
            args.append("set")
            for name, value in fields.items():
                args.extend((name, value))
        key = flag_key(kind, record_id)
        old, new, version = await self._write_script(self._redis, [key], args)
        return WriteResult(
            old=field_map(old) or None, new=field_map(new) or None, version=int(version)
        )

    async def read(self, kind: FlagKind, record_id: str) -> Fields | None:
        raw = await self._redis.hgetall(flag_key(kind, record_id))
        return field_map(raw) or None

    async def load_all(self) -> dict[FlagKind, dict[str, Fields]]:
        """Every flag record's fields, by kind and id."""
        return await self.load_decoded(_fields_as_they_are, [])

    async def load_decoded(
        self,
        decode: Callable[[FlagKind, Fields], _R],
        bad: list[str],
        into: dict[FlagKind, dict[str, _R]] | None = None,
    ) -> dict[FlagKind, dict[str, _R]]:
        """Every flag record, by kind and id, as ``decode`` makes it of its fields; the
        ids of records it cannot read (KeyError, ValueError) go to ``bad``. ``into``:
        the (empty) tables to fill, for a caller that wants its own kind of table.

        One ``SCAN`` pass over the keyspace for all kinds (only hashes named like
        a flag), then ``HGETALL`` in batches of :data:`_LOAD_BATCH`, each batch one
        round trip, decoded as it arrives: a million records load in seconds, the
        event loop is free between batches and raw fields never pile up.
        """
        loaded = into if into is not None else {}
        for kind in FlagKind:
            loaded.setdefault(kind, {})
        batch: list[tuple[FlagKind, str, str]] = []
        async for key in scan_keys(self._redis, ALL_FLAGS_PATTERN, count=_SCAN_COUNT, type_="hash"):
            found = parse_flag_key(key)
            if found is None:
                continue
            batch.append((found[0], found[1], key))
            if len(batch) >= _LOAD_BATCH:
                await self._load_batch(batch, decode, bad, loaded)
                batch = []
        await self._load_batch(batch, decode, bad, loaded)
        return loaded

    async def _load_batch(
        self,
        batch: list[tuple[FlagKind, str, str]],
        decode: Callable[[FlagKind, Fields], _R],
        bad: list[str],
        into: dict[FlagKind, dict[str, _R]],
    ) -> None:
        if not batch:
            return
        replies = await self._bulk.execute_many([("HGETALL", key) for _, _, key in batch])
        self.records_read += len(batch)
        for (kind, record_id, _), reply in zip(batch, replies, strict=True):
            fields = field_map(reply)
            if not fields:  # expired between SCAN and HGETALL
                continue
            try:
                into[kind][record_id] = decode(kind, fields)
            except (KeyError, ValueError):
                bad.append(record_id)


def _fields_as_they_are(kind: FlagKind, fields: Fields) -> Fields:
    return fields
