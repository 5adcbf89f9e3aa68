"""Both kinds of :class:`Commands` (auto-pipelined, redis-py) and the full flag load over them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.embedded_redis import EmbeddedRedis
from gateway.model import FlagKind, StateRecord
from gateway.snapshot import decode_record
from gateway.store.autopipe import AutoPipeline
from gateway.store.commands import Commands, RedisPyCommands, field_map
from gateway.store.flags import FlagStore
from gateway.store.keys import flag_key, parse_flag_key
from gateway.store.scripts import LuaScript


@pytest.fixture(params=["autopipe", "redis-py"])
async def commands(
    redis_server: EmbeddedRedis, request: pytest.FixtureRequest
) -> AsyncIterator[Commands]:
    if request.param == "autopipe":
        pipe = AutoPipeline("127.0.0.1", redis_server.port)
        try:
            yield pipe
        finally:
            await pipe.aclose()
    else:
        client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            yield RedisPyCommands(client)
        finally:
            await client.aclose()


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield redis
    finally:
        await redis.aclose()


async def test_a_batch_of_one_is_a_list_of_one_reply(commands: Commands) -> None:
    await commands.execute_many([("RPUSH", "l", "a", "b", "c"), ("HSET", "h", "f", "v")])
    assert await commands.execute_many([("LRANGE", "l", 0, -1)]) == [["a", "b", "c"]]
    (reply,) = await commands.execute_many([("HGETALL", "h")])
    assert field_map(reply) == {"f": "v"}
    assert await commands.execute_many([]) == []
    assert await commands.execute("LLEN", "l") == 3


async def test_an_error_reply_in_a_batch_raises(commands: Commands) -> None:
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await commands.execute_many([("SET", "s", "1"), ("LPUSH", "s", "x")])
    assert await commands.execute("GET", "s") == "1"  # the rest of the batch ran


async def test_evalsha_falls_back_to_eval_where_the_script_is_missing(commands: Commands) -> None:
    script = LuaScript("counters")
    await commands.execute("SCRIPT", "FLUSH")
    reply = await commands.evalsha(script.sha, script.source, (), ["peek", "", "n1", "0"])
    assert reply[0] == 2  # peek
    assert await commands.execute("SCRIPT", "EXISTS", script.sha) == [1]


def test_flag_keys_are_told_from_other_keys() -> None:
    assert parse_flag_key(flag_key(FlagKind.KILL_SWITCH, "product:spot")) == (
        FlagKind.KILL_SWITCH,
        "product:spot",
    )
    assert parse_flag_key(flag_key(FlagKind.ACCOUNT_STATE, "alice")) == (
        FlagKind.ACCOUNT_STATE,
        "alice",
    )
    for other in ("pt:{acct:alice}:day", "pt:nope:{x}", "xx:acct:{alice}", "pt:acct:alice", "pt"):
        assert parse_flag_key(other) is None, other


async def test_a_full_load_reads_every_kind_in_one_pass_and_skips_other_keys(
    client: aioredis.Redis, commands: Commands
) -> None:
    store = FlagStore(client, bulk=commands)
    written = {
        (FlagKind.ACCOUNT_STATE, f"acct-{i}"): {"value": str(i % 3 + 1), "actor": "ops"}
        for i in range(2500)  # several batches
    }
    written[(FlagKind.KILL_SWITCH, "product:spot")] = {"value": "1"}
    written[(FlagKind.SYMBOL_STATUS, "BTC-USDT")] = {"value": "2"}
    async with client.pipeline(transaction=False) as pipe:
        for (kind, record_id), fields in written.items():
            pipe.hset(flag_key(kind, record_id), mapping=fields)
        pipe.hset("pt:{acct:alice}:day", mapping={"day": "1"})  # a counter, not a flag
        pipe.hset("pt:nope:{x}", mapping={"value": "1"})  # no such kind
        pipe.set(flag_key(FlagKind.ACCOUNT_STATE, "not-a-hash"), "1")
        await pipe.execute()

    loaded = await store.load_all()

    assert set(loaded) == set(FlagKind)
    assert {
        (kind, record_id): fields
        for kind, records in loaded.items()
        for record_id, fields in records.items()
    } == written
    assert store.records_read == len(written)


async def test_a_decoded_load_reads_records_as_they_arrive_and_reports_unreadable_ones(
    client: aioredis.Redis, commands: Commands
) -> None:
    store = FlagStore(client, bulk=commands)
    await client.hset(flag_key(FlagKind.ACCOUNT_STATE, "alice"), mapping={"value": "3"})
    await client.hset(flag_key(FlagKind.ACCOUNT_STATE, "bob"), mapping={"value": "frozen"})
    await client.hset(flag_key(FlagKind.GROUP_MEMBER, "carol"), mapping={"group": "g1"})
    bad: list[str] = []

    loaded = await store.load_decoded(decode_record, bad)

    assert bad == ["bob"]  # the only unreadable one
    alice = loaded[FlagKind.ACCOUNT_STATE]["alice"]
    assert isinstance(alice, StateRecord) and alice.value == 3
    assert set(loaded[FlagKind.ACCOUNT_STATE]) == {"alice"}
    assert loaded[FlagKind.GROUP_MEMBER]["carol"].group_id == "g1"
