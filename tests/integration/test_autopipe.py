"""The order path's auto-pipelined connection, against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

from gateway.embedded_redis import EmbeddedRedis
from gateway.store.autopipe import AutoPipeline, auto_pipeline
from gateway.store.scripts import LuaScript


def pipe_for(server: EmbeddedRedis, **options: float) -> AutoPipeline:
    return AutoPipeline("127.0.0.1", server.port, **options)  # type: ignore[arg-type]


async def test_concurrent_calls_share_one_connection_and_get_their_own_replies(
    redis_server: EmbeddedRedis,
) -> None:
    pipe = pipe_for(redis_server)
    try:
        replies = await asyncio.gather(
            *(pipe.execute("INCRBY", f"k{i % 7}", i) for i in range(500))
        )
        expected: dict[str, int] = {}
        for i in range(500):
            key = f"k{i % 7}"
            expected[key] = expected.get(key, 0) + i
        assert replies[-1] == expected["k" + str(499 % 7)]
        check = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            assert {k: int(await check.get(k)) for k in expected} == expected
        finally:
            await check.aclose()
        assert pipe.connects == 1
    finally:
        await pipe.aclose()


async def test_error_replies_raise_redis_py_exceptions_and_the_connection_goes_on(
    redis_server: EmbeddedRedis,
) -> None:
    pipe = pipe_for(redis_server)
    try:
        await pipe.execute("SET", "s", "text")
        with pytest.raises(ResponseError, match="not an integer"):
            await pipe.execute("INCR", "s")
        with pytest.raises(NoScriptError):
            await pipe.execute("EVALSHA", "0" * 40, 0)
        assert await pipe.execute("GET", "s") == "text"
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await pipe.execute_many([("SET", "a", "1"), ("LPUSH", "a", "x"), ("SET", "b", "2")])
        assert await pipe.execute_many([("GET", "a"), ("GET", "b")]) == ["1", "2"]
        assert pipe.connects == 1
    finally:
        await pipe.aclose()


async def test_evalsha_loads_the_script_where_it_is_missing(redis_server: EmbeddedRedis) -> None:
    script = LuaScript("counters")
    pipe = pipe_for(redis_server)
    try:
        args = ["peek", "", "n1", "0"]
        first = await pipe.evalsha(script.sha, script.source, (), args)
        await pipe.execute("SCRIPT", "FLUSH")
        again = await pipe.evalsha(script.sha, script.source, (), args)
        assert first[0] == again[0] == 2
        assert await pipe.execute("SCRIPT", "EXISTS", script.sha) == [1]
    finally:
        await pipe.aclose()


async def test_a_call_given_up_by_its_caller_does_not_shift_the_replies_of_the_others(
    redis_server: EmbeddedRedis,
) -> None:
    pipe = pipe_for(redis_server)
    try:
        await pipe.execute("SET", "x", "1")
        # The first call blocks in Redis for 300 ms; its caller stops waiting after 50 ms.
        slow = asyncio.ensure_future(pipe.execute("BLPOP", "nothing", "0.3"))
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(0.05):
                await asyncio.shield(slow)
        slow.cancel()
        after = await asyncio.gather(pipe.execute("GET", "x"), pipe.execute("INCR", "x"))
        assert after == ["1", 2]
    finally:
        await pipe.aclose()


async def test_calls_past_their_deadline_fail_alone_earliest_first(
    redis_server: EmbeddedRedis,
) -> None:
    """Deadlines given in any order each fail their own call (the builtin TimeoutError,
    as under ``asyncio.timeout``) while Redis is paused; the calls still within theirs
    get their own replies once it answers."""
    source = "return ARGV[1]"
    pipe = pipe_for(redis_server)
    pauser = aioredis.Redis.from_url(redis_server.url)
    try:
        sha = await pipe.execute("SCRIPT", "LOAD", source)
        await pauser.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        patient = asyncio.ensure_future(pipe.evalsha(sha, source, (), ["patient"], 10.0))
        hasty = asyncio.ensure_future(pipe.evalsha(sha, source, (), ["hasty"], 0.05))
        later = asyncio.ensure_future(pipe.evalsha(sha, source, (), ["later"], 0.1))
        plain = asyncio.ensure_future(pipe.evalsha(sha, source, (), ["plain"]))
        # Both short deadlines pass while Redis is still paused: neither waits for it.
        done, _ = await asyncio.wait({hasty, later}, timeout=1.0)
        assert done == {hasty, later}
        for failed in (hasty, later):
            assert type(failed.exception()) is asyncio.TimeoutError  # the builtin
        assert not patient.done() and not plain.done()
        assert await patient == "patient"
        assert await plain == "plain"
        assert await pipe.evalsha(sha, source, (), ["next"], 1.0) == "next"
        assert pipe.connects == 1
    finally:
        await pauser.aclose()
        await pipe.aclose()


async def test_a_lost_connection_fails_its_calls_and_the_next_call_reconnects(
    redis_server: EmbeddedRedis,
) -> None:
    pipe = pipe_for(redis_server)
    try:
        await pipe.execute("SET", "x", "1")
        waiting = asyncio.ensure_future(pipe.execute("BLPOP", "nothing", "5"))
        await asyncio.sleep(0.05)
        killer = aioredis.Redis.from_url(redis_server.url)
        try:
            await killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        finally:
            await killer.aclose()
        with pytest.raises(ConnectionError):
            await waiting
        assert await pipe.execute("GET", "x") == "1"
        assert pipe.connects == 2
    finally:
        await pipe.aclose()


async def test_an_unreachable_redis_is_a_connection_error(redis_server: EmbeddedRedis) -> None:
    port = redis_server.port
    redis_server.stop()
    pipe = AutoPipeline("127.0.0.1", port, connect_timeout_s=0.5)
    try:
        with pytest.raises(ConnectionError):
            await pipe.execute("PING")
    finally:
        await pipe.aclose()


async def test_a_silent_connection_is_dropped_after_stale_after_s(
    redis_server: EmbeddedRedis,
) -> None:
    pipe = pipe_for(redis_server, stale_after_s=0.2)
    assert redis_server.process is not None
    pid = redis_server.process.pid
    try:
        await pipe.execute("PING")
        os.kill(pid, signal.SIGSTOP)
        try:
            first = asyncio.ensure_future(pipe.execute("PING"))
            await asyncio.sleep(0.3)
            # The next call finds the oldest one unanswered for too long: all are failed.
            with pytest.raises(ConnectionError, match="unanswered"):
                await pipe.execute("PING")
            with pytest.raises(TimeoutError, match="unanswered"):
                await first
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await pipe.execute("PING") == "PONG"
        assert pipe.connects == 2
    finally:
        await pipe.aclose()


async def test_url_options_password_database_and_name(redis_server: EmbeddedRedis) -> None:
    admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await admin.config_set("requirepass", "s3cret")
        url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/3"
        pipe = auto_pipeline(url, connect_timeout_ms=500, stale_after_ms=2000, name="hot")
        assert pipe is not None
        try:
            await pipe.execute("SET", "in-db-3", "yes")
            await admin.execute_command("AUTH", "s3cret")
            await admin.execute_command("SELECT", "3")
            assert await admin.get("in-db-3") == "yes"
            assert any(c.get("name") == "hot" for c in await admin.client_list())
            pipe.rename("hot-2")
            await pipe.execute("PING")
            assert any(c.get("name") == "hot-2" for c in await admin.client_list())
        finally:
            await pipe.aclose()
        wrong = auto_pipeline(f"redis://:nope@127.0.0.1:{redis_server.port}/0", 500, 2000)
        assert wrong is not None
        try:
            with pytest.raises(ConnectionError):  # AuthenticationError is one
                await wrong.execute("PING")
        finally:
            await wrong.aclose()
    finally:
        await admin.aclose()


def test_only_a_single_redis_over_tcp_gets_one() -> None:
    assert auto_pipeline("redis+cluster://127.0.0.1:7000", 500, 2000) is None
    assert auto_pipeline("rediss://127.0.0.1:6380/0", 500, 2000) is None
    assert auto_pipeline("unix:///tmp/redis.sock", 500, 2000) is None
    assert auto_pipeline("redis://127.0.0.1:6390/0", 500, 2000) is not None


async def test_a_closed_client_refuses_calls(redis_server: EmbeddedRedis) -> None:
    pipe = pipe_for(redis_server)
    await pipe.execute("PING")
    await pipe.aclose()
    with pytest.raises(ConnectionError):
        await pipe.execute("PING")
