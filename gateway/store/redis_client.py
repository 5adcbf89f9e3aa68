"""Redis clients for the hot path and for the snapshot follower."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def hot_client(url: str) -> Redis:
    """The client for counters and admin writes (decoded replies)."""
    return Redis.from_url(url, decode_responses=True, health_check_interval=0)


def follower_client(url: str) -> Redis:
    """A client that never retries on its own, so the follower sees every disconnect."""
    return Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        socket_keepalive=True,
        health_check_interval=1,
    )
