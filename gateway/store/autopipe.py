"""One Redis connection that carries every concurrent order's counter call.

redis-py's asyncio client spends more of a call in Python (connection pool,
retry wrapper, argument packing one argument at a time) than Redis spends
running the counter script, and it writes each call with its own system call.
On the order path the gateway uses this instead, for a single Redis (a
cluster keeps redis-py's cluster client):

* **auto-pipelining**: calls issued in the same turn of the event loop are
  written together, in one ``write``; their replies come back in order on the
  same connection and are handed to each caller as they arrive. Under load,
  64 concurrent orders cost one system call each way instead of 64;
* commands are packed by hiredis (C) and replies parsed by it;
* a call may carry a deadline (``evalsha(..., timeout_s=...)``): past it the
  call fails with the builtin ``TimeoutError``, as under ``asyncio.timeout``,
  without a timer per call: the connection keeps its calls' deadlines in a heap
  and one timer, set for the earliest. A late reply is read and dropped when it
  comes; the calls behind it are not disturbed. The same goes for a call its
  caller stops waiting for (``asyncio.timeout`` around it);
* failures raise redis-py's own exceptions (``ConnectionError``,
  ``TimeoutError``, ``ResponseError``, ``NoScriptError``), so the failure
  policy reads them like any other store error. A connection lost fails every
  call waiting on it; the next call connects again. A connection that has
  left a call unanswered for ``stale_after_s`` (a silent network, a stopped
  server) is closed, so waiting calls cannot pile up without bound.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Error replies whose first word names a more precise redis-py exception.
_ERRORS_BY_PREFIX: dict[str, type[Exception]] = {
    "NOSCRIPT": NoScriptError,
    "WRONGPASS": AuthenticationError,
    "NOAUTH": AuthenticationError,
}


_TIMER_GRANULARITY_S = 0.001

#: hiredis' packer (C); its stub wants a one-element tuple, any length works.
_pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


class _ReplyError(Exception):
    """What hiredis builds for an error reply; turned into a redis-py exception."""


def _error(reply: _ReplyError) -> Exception:
    message = str(reply)
    prefix = message.split(" ", 1)[0]
    return _ERRORS_BY_PREFIX.get(prefix, ResponseError)(message)


class _Batch:
    """Stands in the reply queue for ``count`` commands written as one batch."""

    __slots__ = ("count", "error", "future", "replies")

    def __init__(self, future: asyncio.Future[Any], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.error: _ReplyError | None = None

    def add(self, reply: Any) -> bool:
        """Take one reply; True once the batch is complete."""
        if type(reply) is _ReplyError and self.error is None:
            self.error = reply
        self.replies.append(reply)
        return len(self.replies) >= self.count


class _Connection(asyncio.Protocol):
    """The socket, the calls written on it and waiting for their replies."""

    def __init__(self, stale_after_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader(encoding="utf-8", replyError=_ReplyError)
        self._transport: asyncio.Transport | None = None
        #: Calls written (or about to be), oldest first, with when they were issued.
        self._waiting: collections.deque[tuple[asyncio.Future[Any] | _Batch, float]] = (
            collections.deque()
        )
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._stale_after_s = stale_after_s
        #: Calls with a deadline, earliest first (answered ones leave when they reach the
        #: top), and the one timer, set for the earliest deadline not yet answered.
        self._deadlines: list[tuple[float, int, asyncio.Future[Any]]] = []
        self._deadline_order = itertools.count()
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = math.inf
        self.closed = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream cannot be trusted
                self.abort(RedisConnectionError("Redis sent a reply to no request"))
                return
            entry = waiting[0][0]
            if isinstance(entry, _Batch):
                if not entry.add(reply):
                    continue  # more replies of the batch to come
                future = entry.future
                reply = entry.error if entry.error is not None else entry.replies
            else:
                future = entry
            waiting.popleft()
            if future.done():  # its caller gave up (deadline); the reply is dropped
                continue
            if type(reply) is _ReplyError:
                future.set_exception(_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = exc or "closed by the server"
        self._fail(RedisConnectionError(f"Connection to Redis lost: {reason}"))

    # -- calls -------------------------------------------------------------------

    def send(
        self, packed: bytes, count: int = 1, deadline: float | None = None
    ) -> asyncio.Future[Any]:
        """Queue packed commands (``count`` of them, one reply each), written with the
        others of this loop turn. The future gets the reply; for ``count`` > 1 the list
        of replies, or the first error reply once all have arrived; or ``TimeoutError``
        once the loop's clock reaches ``deadline`` with no reply."""
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()
        now = loop.time()
        waiting = self._waiting
        if waiting and now - waiting[0][1] > self._stale_after_s:
            stale = f"Redis left a call unanswered for {self._stale_after_s}s"
            self.abort(RedisTimeoutError(stale))
            future.set_exception(RedisConnectionError(f"{stale}; reconnecting"))
            return future
        waiting.append((future if count == 1 else _Batch(future, count), now))
        self._outgoing.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, next(self._deadline_order), future))
            if deadline < self._expiry_at:
                self._expire_at(deadline)
        return future

    def _expire_at(self, when: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = when
        self._expiry = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Fail the calls whose deadline has come; set the timer for the next one."""
        self._expiry, self._expiry_at = None, math.inf
        deadlines = self._deadlines
        # Due within the timer's granularity counts as due (uvloop's timers are whole
        # milliseconds): else the timer would be set again and again for the same call.
        now = self._loop.time() + _TIMER_GRANULARITY_S
        while deadlines:
            deadline, _, future = deadlines[0]
            if not future.done():
                if deadline > now:
                    self._expire_at(deadline)
                    return
                future.set_exception(TimeoutError("Redis did not answer within the deadline"))
            heapq.heappop(deadlines)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is not None and not self.closed and outgoing:
            self._transport.write(b"".join(outgoing) if len(outgoing) > 1 else outgoing[0])

    def abort(self, error: Exception) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        self.closed = True
        self._outgoing = []
        self._deadlines = []
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry, self._expiry_at = None, math.inf
        waiting, self._waiting = self._waiting, collections.deque()
        for entry, _ in waiting:
            future = entry.future if isinstance(entry, _Batch) else entry
            if not future.done():
                future.set_exception(error)


class AutoPipeline:
    """Calls to one Redis over one auto-pipelined connection (see the module doc)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        connect_timeout_s: float = 0.5,
        stale_after_s: float = 2.0,
        name: str = "",
    ) -> None:
        self.host, self.port = host, port
        self._username, self._password, self._db = username, password, db
        self._connect_timeout_s = connect_timeout_s
        self._stale_after_s = stale_after_s
        self._name = name
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False
        #: Connections made (the first one included): a reconnect count for tests and logs.
        self.connects = 0

    async def execute(self, *args: str | int | bytes) -> Any:
        """One command; its reply (strings decoded as UTF-8) or a redis-py exception."""
        return await self._call(args, None)

    async def execute_many(self, commands: Sequence[Sequence[str | int | bytes]]) -> list[Any]:
        """Several commands in one write; their replies, in order. An error reply raises
        (the first one) once every reply has arrived."""
        if not commands:
            return []
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        if len(commands) == 1:  # a batch of one is a plain call, whose reply may be a list
            return [await connection.send(_pack(tuple(commands[0])))]
        packed = b"".join([_pack(tuple(command)) for command in commands])
        return list(await connection.send(packed, len(commands)))

    async def evalsha(
        self,
        sha: str,
        source: str,
        keys: Sequence[str],
        args: Sequence[str | int | bytes],
        timeout_s: float | None = None,
    ) -> Any:
        """``EVALSHA``, and ``EVAL`` of ``source`` if this Redis does not have the script;
        ``TimeoutError`` when ``timeout_s`` has passed (connecting included) with no reply."""
        deadline = None
        if timeout_s is not None:
            deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            return await self._call(("EVALSHA", sha, len(keys), *keys, *args), deadline)
        except NoScriptError:
            return await self._call(("EVAL", source, len(keys), *keys, *args), deadline)

    async def _call(self, args: tuple[str | int | bytes, ...], deadline: float | None) -> Any:
        """One command, failing with ``TimeoutError`` at ``deadline`` (connecting included)."""
        connection = self._connection
        if connection is None or connection.closed:
            async with asyncio.timeout_at(deadline):  # None: no deadline
                connection = await self._connect()
        return await connection.send(_pack(args), 1, deadline)

    def rename(self, name: str) -> None:
        """Name the connection (``CLIENT SETNAME``) from the next connect on; reconnects."""
        self._name = name
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort(RedisConnectionError("renamed: reconnecting"))

    async def aclose(self) -> None:
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort(RedisConnectionError("client closed"))

    async def _connect(self) -> _Connection:
        if self._closed:
            raise RedisConnectionError("client closed")
        # Calls arriving while a connection is being made wait for that one.
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_future()
            try:
                connection = await self._open()
            except BaseException as exc:
                self._connecting.set_exception(
                    exc if isinstance(exc, Exception) else RedisConnectionError("connect cancelled")
                )
                self._connecting.exception()  # retrieved: no "never retrieved" warning
                self._connecting = None
                raise
            self._connection = connection
            self._connecting.set_result(connection)
            self._connecting = None
            return connection
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._stale_after_s), self.host, self.port
                )
                setup: list[tuple[str | int, ...]] = []
                if self._password is not None:
                    setup.append(
                        ("AUTH", self._username, self._password)
                        if self._username
                        else ("AUTH", self._password)
                    )
                if self._db:
                    setup.append(("SELECT", self._db))
                if self._name:
                    setup.append(("CLIENT", "SETNAME", self._name))
                try:
                    for reply in [connection.send(_pack(c)) for c in setup]:
                        await reply
                except BaseException:
                    connection.abort(RedisConnectionError("connection set-up failed"))
                    raise
        except TimeoutError as exc:  # asyncio's deadline (the builtin, an OSError)
            raise RedisTimeoutError(
                f"connecting to Redis {self.host}:{self.port}: timed out"
            ) from exc
        except OSError as exc:
            raise RedisConnectionError(
                f"connecting to Redis {self.host}:{self.port}: {exc}"
            ) from exc
        self.connects += 1
        return connection


def auto_pipeline(
    url: str, connect_timeout_ms: int, stale_after_ms: int, name: str = ""
) -> AutoPipeline | None:
    """An :class:`AutoPipeline` for a single Redis over TCP (``redis://``); None for
    anything else (a cluster, TLS, a Unix socket), which stays on redis-py."""
    if urlsplit(url).scheme != "redis":
        return None
    options = parse_url(url)
    return AutoPipeline(
        str(options.get("host", "localhost")),
        int(options.get("port", 6379)),
        username=options.get("username"),
        password=options.get("password"),
        db=int(options.get("db", 0)),
        connect_timeout_s=connect_timeout_ms / 1000,
        stale_after_s=stale_after_ms / 1000,
        name=name,
    )
