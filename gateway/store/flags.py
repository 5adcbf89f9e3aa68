"""Flag records in Redis: the admin path's writes and the full loads behind every snapshot."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.model import FlagKind
from gateway.store.keys import CHANGES_CHANNEL, flag_key, flag_pattern, record_id_from_key
from gateway.store.redis_client import RedisClient, scan_keys
from gateway.store.scripts import LuaScript

Fields = dict[str, str]

_KIND_BY_VALUE = {kind.value: kind for kind in FlagKind}
_LOAD_BATCH = 500


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
            kind=_KIND_BY_VALUE[message["k"]],
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

    def __init__(self, redis: RedisClient, channel: str = CHANGES_CHANNEL) -> None:
        self._redis = redis
        self._channel = channel
        self._write_script = LuaScript("flag_write")

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
        return WriteResult(old=_pairs(old) or None, new=_pairs(new) or None, version=int(version))

    async def read(self, kind: FlagKind, record_id: str) -> Fields | None:
        raw = await self._redis.hgetall(flag_key(kind, record_id))
        return _decode_map(raw) or None

    async def load_all(self) -> dict[FlagKind, dict[str, Fields]]:
        """Every flag record, by kind and id (SCAN, then HGETALL in pipelined batches)."""
        loaded: dict[FlagKind, dict[str, Fields]] = {}
        for kind in FlagKind:
            records: dict[str, Fields] = {}
            keys: list[str] = []
            async for key in scan_keys(self._redis, flag_pattern(kind)):
                keys.append(key)
                if len(keys) >= _LOAD_BATCH:
                    await self._load_batch(kind, keys, records)
                    keys = []
            await self._load_batch(kind, keys, records)
            loaded[kind] = records
        return loaded

    async def _load_batch(self, kind: FlagKind, keys: list[str], into: dict[str, Fields]) -> None:
        if not keys:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            results = await pipe.execute()
        for key, raw in zip(keys, results, strict=True):
            fields = _decode_map(raw)
            if fields:  # expired between SCAN and HGETALL
                into[record_id_from_key(kind, key)] = fields


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode_map(raw: Mapping[Any, Any]) -> Fields:
    return {_text(k): _text(v) for k, v in raw.items()}


def _pairs(flat: list[Any]) -> Fields:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
