"""The session directory: which node and connection hold each user's one live session.

``sessions`` is one Redis hash, user id -> ``node|connection id|token hash``; each node also
keeps the set of users it holds (``node:NAME:users``) so a dead node's sessions can be found.
Binding swaps the holder in one Lua script, so two logins racing on two nodes always end with
exactly one holder, and each of them learns whom it replaced (and kicks that session).

A node is alive while its lease key exists; the node renews it (TTL ``heartbeat_timeout``).
Any node that sees a registered node without a lease reaps it: one Lua script removes the dead
node's sessions from the directory and returns them, so exactly one reaper tells their friends
and rooms that they went offline.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

import redis

from .store import Keys

_BIND = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
if old then
  local node = string.match(old, '^([^|]*)')
  if ARGV[3] .. node .. ':users' ~= KEYS[2] then
    redis.call('SREM', ARGV[3] .. node .. ':users', ARGV[1])
  end
end
return old
"""

_UNBIND = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# Re-register a session after Redis lost its data: only where nobody else holds the user.
_REBIND = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

_REAP = """
if ARGV[2] ~= 'restart' and redis.call('EXISTS', KEYS[3]) == 1 then
  return {}
end
redis.call('DEL', KEYS[3])
if redis.call('HDEL', KEYS[4], ARGV[1]) == 0 then
  return {}
end
local gone = {}
for _, user in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local holder = redis.call('HGET', KEYS[1], user)
  if holder and string.match(holder, '^([^|]*)') == ARGV[1] then
    redis.call('HDEL', KEYS[1], user)
    table.insert(gone, user)
  end
end
redis.call('DEL', KEYS[2])
return gone
"""


@dataclass(frozen=True)
class Holder:
    """Where a user's session lives."""

    node: str
    conn_id: int
    token_hash: str

    def encode(self) -> str:
        return f"{self.node}|{self.conn_id}|{self.token_hash}"

    @classmethod
    def decode(cls, raw: bytes | str) -> "Holder":
        text = raw.decode() if isinstance(raw, bytes) else raw
        node, conn_id, token_hash = text.split("|", 2)
        return cls(node, int(conn_id), token_hash)


class SessionDirectory:
    """Thread-safe (redis-py pools its connections); every call is one round trip."""

    def __init__(self, client: redis.Redis, keys: Keys, node: str) -> None:
        self.client = client
        self.keys = keys
        self.node = node
        self._bind = client.register_script(_BIND)
        self._unbind = client.register_script(_UNBIND)
        self._rebind = client.register_script(_REBIND)

    def bind(self, user_id: int, conn_id: int, token_hash: str) -> Holder | None:
        """Make this node's connection the user's session; returns the holder it replaced."""
        mine = Holder(self.node, conn_id, token_hash)
        old = self._bind(keys=[self.keys.directory, self.keys.node_users(self.node)],
                         args=[user_id, mine.encode(), self.keys.node_prefix])
        if old is None:
            return None
        holder = Holder.decode(old)
        return None if holder == mine else holder

    def unbind(self, user_id: int, conn_id: int, token_hash: str) -> bool:
        """Forget the session if this connection still holds it; True if it did."""
        mine = Holder(self.node, conn_id, token_hash)
        return bool(self._unbind(keys=[self.keys.directory, self.keys.node_users(self.node)],
                                 args=[user_id, mine.encode()]))

    def rebind(self, sessions: list[tuple[int, int, str]]) -> list[int]:
        """After Redis lost its data: put back (user, connection, token hash) of this node's
        live sessions unless another node bound the user meanwhile; returns the users that
        another node holds now."""
        pipe = self.client.pipeline(transaction=False)
        for user_id, conn_id, token_hash in sessions:
            self._rebind(keys=[self.keys.directory, self.keys.node_users(self.node)],
                         args=[user_id, Holder(self.node, conn_id, token_hash).encode()], client=pipe)
        kept = pipe.execute()
        return [user_id for (user_id, _, _), ok in zip(sessions, kept) if not ok]

    def holder(self, user_id: int) -> Holder | None:
        raw = self.client.hget(self.keys.directory, user_id)
        return None if raw is None else Holder.decode(raw)

    def online_among(self, user_ids: Iterable[int]) -> set[int]:
        ids = list(user_ids)
        if not ids:
            return set()
        found = self.client.hmget(self.keys.directory, ids)
        return {uid for uid, raw in zip(ids, found) if raw is not None}

    def count(self) -> int:
        return self.client.hlen(self.keys.directory)


class NodeRegistry:
    """Node leases and the status each node publishes (``meeting-server status``)."""

    def __init__(self, client: redis.Redis, keys: Keys, node: str, lease_seconds: float) -> None:
        self.client = client
        self.keys = keys
        self.node = node
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self._reap = client.register_script(_REAP)

    def renew(self, status: dict[str, Any]) -> None:
        """Refresh this node's lease and status (every heartbeat interval or so)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.lease(self.node), status.get("started", 0), px=self.lease_ms)
        pipe.hset(self.keys.nodes, self.node, json.dumps(status, separators=(",", ":")))
        pipe.execute()

    def leave(self) -> None:
        """A clean stop: give the lease up now, so another node reaps what is left of this
        node's sessions (and tells their friends and rooms) at its next tick."""
        self.client.delete(self.keys.lease(self.node))

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every registered node's last status, with ``alive`` from its lease."""
        raw = self.client.hgetall(self.keys.nodes)
        names = sorted(name.decode() for name in raw)
        if not names:
            return {}
        alive = self.client.pipeline(transaction=False)
        for name in names:
            alive.exists(self.keys.lease(name))
        leases = alive.execute()
        return {name: {**json.loads(raw[name.encode()]), "alive": bool(lease)}
                for name, lease in zip(names, leases)}

    def dead_nodes(self) -> list[str]:
        return [name for name, info in self.nodes().items() if not info["alive"] and name != self.node]

    def reap(self, node: str, restarted: bool = False) -> list[int]:
        """Remove a node without a lease and its sessions; returns the users it held (empty if
        the node is alive or another node reaped it first). ``restarted``: the node's new
        process removes its previous incarnation's sessions, lease or not."""
        gone = self._reap(keys=[self.keys.directory, self.keys.node_users(node), self.keys.lease(node),
                                self.keys.nodes], args=[node, "restart" if restarted else ""])
        return [int(user) for user in gone]


def cluster_nodes(url: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Every node of the cluster at ``url``/``prefix`` as it last registered (node, advertise,
    admin, host, pid, started, updated, users, connections, rooms) with ``alive``: what
    ``meeting-server status`` shows for a cluster. Raises redis.RedisError if unreachable."""
    from .store import connect
    client = connect(url)
    try:
        return NodeRegistry(client, Keys(prefix), "", 1.0).nodes()
    finally:
        client.close()
