"""One Redis connection pool and the key names of one cluster.

Every key and channel starts with the cluster's prefix (``redis_prefix``), so several clusters
(or tests) can share one Redis server without seeing each other; pub/sub channels are not
per-database in Redis, which is why a prefix is used rather than a database number.
"""
from __future__ import annotations

import redis

from common.errors import ApiError, ErrorCode

# Redis errors that mean "the store is unreachable right now" (as opposed to a bug).
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

SOCKET_TIMEOUT = 2.0


class Keys:
    """The names of every key and channel of one cluster."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.directory = prefix + "sessions"              # hash: user id -> "node|conn|token hash"
        self.nodes = prefix + "nodes"                     # hash: node name -> JSON status
        self.node_prefix = prefix + "node:"

    def node_users(self, node: str) -> str:
        """Set of the user ids whose session the node holds."""
        return f"{self.node_prefix}{node}:users"

    def lease(self, node: str) -> str:
        """Exists while the node is alive (a TTL renewed by the node)."""
        return f"{self.node_prefix}{node}:lease"

    def channel(self, node: str) -> str:
        return f"{self.node_prefix}{node}:events"

    def bucket(self, name: str, key: object) -> str:
        return f"{self.prefix}rate:{name}:{key}"

    def window(self, name: str, key: object) -> str:
        return f"{self.prefix}window:{name}:{key}"

    def room(self, number: str) -> str:
        return f"{self.prefix}room:{number}"

    def room_members(self, number: str) -> str:
        return f"{self.prefix}room:{number}:members"

    def room_order(self, number: str) -> str:
        return f"{self.prefix}room:{number}:order"

    @property
    def room_graces(self) -> str:
        return self.prefix + "room-graces"               # sorted set: room number -> earliest grace end (ms)

    @property
    def rooms(self) -> str:
        return self.prefix + "rooms"                      # set of live room numbers

    def user_room(self, user_id: int) -> str:
        return f"{self.prefix}user:{user_id}:room"

    def user_waiting(self, user_id: int) -> str:
        """The number of the locked room whose waiting room the user is in."""
        return f"{self.prefix}user:{user_id}:waiting"

    def backlog(self, node: str) -> str:
        """Batches published to the node while it was not subscribed (a list, short-lived)."""
        return f"{self.node_prefix}{node}:backlog"


def connect(url: str) -> redis.Redis:
    """A client for ``url`` (redis://host:port/db); replies as bytes, parsed by hiredis.

    RESP2, not redis-py 8's default RESP3: with RESP3 every pub/sub message goes through a
    push handler that formats the whole message for a debug line (``str(response)``) before
    the log level is looked at, which made receiving 8x dearer (4.1 against 0.53 ms of CPU
    per MiB of 256 KiB messages here; file chunks cross nodes this way)."""
    return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
                                health_check_interval=10, protocol=2)


def unavailable(exc: Exception) -> ApiError:
    """The error a client gets while Redis cannot be reached."""
    return ApiError(ErrorCode.UNAVAILABLE, f"the server cannot reach its shared state ({type(exc).__name__}); "
                    "try again in a moment", retry_after=2.0)
