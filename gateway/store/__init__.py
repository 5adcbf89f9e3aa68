"""Everything that talks to Redis: flag records, the snapshot follower, key names, scripts."""

from gateway.store.flags import FlagChange, FlagStore, WriteResult
from gateway.store.follower import SnapshotFollower
from gateway.store.redis_client import follower_client, hot_client

__all__ = [
    "FlagChange",
    "FlagStore",
    "SnapshotFollower",
    "WriteResult",
    "follower_client",
    "hot_client",
]
