"""Redis clients for the hot path and for the snapshot follower, single node or Cluster.

``redis://host:port/db`` is one Redis; ``redis+cluster://host:port[,host:port...]``
is a Redis Cluster reached through any of the listed nodes (the others are
discovered). Hot-path calls are bounded by the caller's deadline, not here:
the clients only make sure nothing waits longer than that on its own (connect
timeout, no backoff sleeps, at most one immediate reconnect of a stale pooled
connection after a Redis restart).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisClusterException, RedisError

#: A client of either kind: both run the scripts, pipelines and SCAN the stores use.
RedisClient: TypeAlias = Redis | RedisCluster

#: What a failed Redis call raises: errors, cluster client errors, socket errors and
#: timeouts (``TimeoutError`` is an ``OSError``).
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)

CLUSTER_SCHEME = "redis+cluster"
#: Connections one client may open (per node in a cluster): a bound on sockets
#: however many calls pile up while Redis does not answer.
MAX_CONNECTIONS = 512
DEFAULT_CONNECT_TIMEOUT_MS = 500


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def cluster_target(url: str) -> ClusterTarget | None:
    """The seed nodes of a ``redis+cluster://`` URL, or None for a single-node URL."""
    parts = urlsplit(url)
    if parts.scheme != CLUSTER_SCHEME:
        return None
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        credentials, netloc = netloc.rsplit("@", 1)
        user, _, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    nodes: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"bad Redis Cluster URL: expected {CLUSTER_SCHEME}://HOST:PORT[,...]")
        nodes.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/", "/0"):
        raise ValueError("bad Redis Cluster URL: a Redis Cluster has only database 0")
    return ClusterTarget(tuple(nodes), username, password)


def hot_client(url: str, connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS) -> RedisClient:
    """The client for counters and admin writes (decoded replies)."""
    connect_s = connect_timeout_ms / 1000
    target = cluster_target(url)
    if target is not None:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            decode_responses=True,
            # Topology changes (failover, resharding) are followed within the
            # caller's deadline: short backoffs, a few attempts.
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 3),
            socket_connect_timeout=connect_s,
            max_connections=MAX_CONNECTIONS,
        )
    return Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=0,
        # A pooled connection found dead (Redis restarted) is reconnected once, at
        # once; anything more is the failure policy's business.
        retry=Retry(NoBackoff(), 1),
        socket_connect_timeout=connect_s,
        max_connections=MAX_CONNECTIONS,
    )


class PubSubSource(Protocol):
    """Where the follower gets a fresh pub/sub connection on every (re)connect."""

    def pubsub(self) -> PubSub: ...

    async def aclose(self) -> None: ...


def follower_client(url: str, hot: RedisClient | None = None) -> PubSubSource:
    """Pub/sub connections that never retry on their own, so the follower sees every
    disconnect (a single Redis, or any node of a cluster: PUBLISH reaches them all).

    For a cluster, ``hot`` (the cluster client) tells which nodes exist beyond the seeds.
    """
    target = cluster_target(url)
    if target is not None:
        return ClusterPubSubSource(target, hot if isinstance(hot, RedisCluster) else None)
    return _follower_redis(url)


def _follower_redis(url: str | None = None, **kwargs: Any) -> Redis:
    options: dict[str, Any] = {
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
        "socket_keepalive": True,
        # The follower pings its subscription itself (and notices silence).
        "health_check_interval": 0,
        "socket_connect_timeout": 2.0,
        # Bounds the connection handshake; message reads pass their own timeout.
        "socket_timeout": 5.0,
    }
    if url is not None:
        return Redis.from_url(url, **options)
    return Redis(**kwargs, **options)


class ClusterPubSubSource:
    """Subscribes on one cluster node at a time, the next one on every reconnect.

    In a Redis Cluster a classic PUBLISH is broadcast to every node, so any
    node will do; going round the seed nodes (and, once known, every node of
    the cluster) finds a live one after a node dies.
    """

    def __init__(self, target: ClusterTarget, cluster: RedisCluster | None = None) -> None:
        self._target = target
        self._cluster = cluster
        self._clients: dict[tuple[str, int], Redis] = {}
        self._known: list[tuple[str, int]] = list(target.nodes)
        self._turn = itertools.count()

    def pubsub(self) -> PubSub:
        if self._cluster is not None:
            for node in self._cluster.get_nodes():
                address = (node.host, int(node.port))
                if address not in self._known:
                    self._known.append(address)
        host, port = self._known[next(self._turn) % len(self._known)]
        client = self._clients.get((host, port))
        if client is None:
            client = _follower_redis(
                host=host,
                port=port,
                username=self._target.username,
                password=self._target.password,
            )
            self._clients[(host, port)] = client
        return client.pubsub()

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def serving_primaries(client: RedisCluster) -> list[ClusterNode]:
    """The nodes that serve the slots, as the client last learnt (``CLUSTER SLOTS``).

    Not the client's own "primary" labels: after a failover a promoted replica
    keeps its old label in redis-py's node cache.
    """
    found: dict[str, ClusterNode] = {}
    for nodes in client.nodes_manager.slots_cache.values():
        if nodes:
            found.setdefault(nodes[0].name, nodes[0])
    return list(found.values())


async def ping(client: RedisClient) -> None:
    """PING every serving primary (a cluster) or the one Redis; raises when one does not
    answer (a failure also makes the cluster client refresh its topology)."""
    if isinstance(client, RedisCluster):
        if not client.nodes_manager.slots_cache:
            await client.initialize()
        await client.ping(target_nodes=serving_primaries(client))
    else:
        await client.ping()


async def scan_keys(
    client: RedisClient, match: str, count: int = 1000, type_: str | None = None
) -> AsyncIterator[str]:
    """Every key matching ``match`` (of type ``type_`` if given): on a cluster, on every
    serving primary (the topology is refreshed first, so a failover just before is seen)."""
    if isinstance(client, RedisCluster):
        await client.nodes_manager.initialize()
        primaries = serving_primaries(client)
        keys = client.scan_iter(match=match, count=count, _type=type_, target_nodes=primaries)
    else:
        keys = client.scan_iter(match=match, count=count, _type=type_)
    async for key in keys:
        yield key.decode() if isinstance(key, bytes) else str(key)
