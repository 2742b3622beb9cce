"""This process as a node of a cluster: its name, lease, session directory, bus and router.

Built by ``server.app.Server`` only when ``config.redis`` is set. Blocking Redis calls run on
worker threads or on the node's own threads (lease, bus, rooms); the reactor only appends to
the bus.

* Login and RESUME bind the directory on the worker that verified them (``claim``); the
  session that was replaced gets its token deleted there, before its node sends KICKED.
* The lease thread renews this node's lease and status every ``lease/4`` seconds (at most
  ``FLUSH_INTERVAL``: it also writes the session-held rate limits back), reaps nodes
  whose lease ran out (their users go offline: ``users_reaped`` hooks) and, when it finds this
  node missing from Redis (Redis restarted, or this node was taken for dead), registers the
  node's live sessions again.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from common import frame as wire
from common.packets import PacketType

from .bus import CALL, KICK, TO_USER, USER_CALL, NodeBus, Record
from .directory import Holder, NodeRegistry, SessionDirectory
from .limits import FLUSH_INTERVAL, SessionTokenBucket, SharedTokenBucket, SharedWindow
from .router import RedisRouter
from .store import UNREACHABLE, Keys, connect, unavailable

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..connection import Connection
    from ..reactor import Reactor
    from ..sessions import Sessions

log = logging.getLogger("server.cluster")

LEASE_SHARE = 0.6     # of heartbeat_timeout: a dead node is reaped within heartbeat_timeout
# Spent by the user's own session only, many times a second: decided where the session is.
SESSION_LIMITS = frozenset({"messages", "typing_notices", "media_states"})


def _running(pid: Any) -> bool:
    """Whether a process with this id runs on this machine."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ClusterNode:
    def __init__(self, config: "ServerConfig", reactor: "Reactor", sessions: "Sessions",
                 connections: dict[int, "Connection"], room_members: Callable[[int], Iterable[int]],
                 node_status: Callable[[], dict[str, Any]]) -> None:
        """``node_status`` gives the figures this node publishes for the cluster status (called
        on the lease thread, after start)."""
        self.config = config
        self.reactor = reactor
        self.sessions = sessions
        self.connections = connections
        self.name = config.node_name
        self.client = connect(config.redis)
        self.keys = Keys(config.redis_prefix)
        self.directory = SessionDirectory(self.client, self.keys, self.name)
        self.registry = NodeRegistry(self.client, self.keys, self.name, LEASE_SHARE * config.heartbeat_timeout)
        self.bus = NodeBus(self.client, self.keys, self.name, call_soon=reactor.call_soon,
                           call_soon_threadsafe=reactor.call_soon_threadsafe, deliver=self._deliver,
                           on_reconnect=self._redis_back)
        self.router = RedisRouter(reactor, sessions, self.bus, self.directory, room_members)
        self.users_reaped: list[Callable[[str, list[int]], None]] = []   # reactor thread
        self.session_buckets: list[SessionTokenBucket] = []
        self.registered_again: list[Callable[[], None]] = []              # reactor thread
        self.redis_back: list[Callable[[float], None]] = []               # reactor thread: (outage began)
        self.calls: dict[str, Callable[[dict], None]] = {}                # (USER_)CALL records by op
        self.record_handlers: dict[int, Callable[[int, bytes], None]] = {}  # other kinds: (id, payload)
        self.node_status = node_status
        self.started = time.time()
        self.advertise = config.advertise
        self.admin_address = ""
        self.reaped_users = 0
        self._stop = threading.Event()
        self._lease_thread: threading.Thread | None = None
        self._registered = False

    # -- shared limits ------------------------------------------------------------------------------
    def token_bucket(self, name: str, per_minute: int) -> "SharedTokenBucket | SessionTokenBucket":
        """A limit shared by the nodes; chat messages are decided where the session is."""
        if name in SESSION_LIMITS:
            bucket = SessionTokenBucket(self.client, self.keys, name, per_minute)
            self.session_buckets.append(bucket)
            return bucket
        return SharedTokenBucket(self.client, self.keys, name, per_minute)

    def window(self, name: str, limit: int, seconds: float) -> SharedWindow:
        return SharedWindow(self.client, self.keys, name, limit, seconds)

    # -- starting and stopping -----------------------------------------------------------------------
    def start(self, port: int, admin_address: str) -> None:
        """Register with Redis and start listening to this node's channel (before serving)."""
        self.advertise = self.config.advertise or f"{self.config.host}:{port}"
        self.admin_address = admin_address
        previous = self.registry.nodes().get(self.name)
        if previous is not None:
            self._take_over(previous)
        self.registry.renew(self._status())
        self._registered = True
        self.bus.start()
        self._lease_thread = threading.Thread(target=self._lease_loop, name="cluster-lease", daemon=True)
        self._lease_thread.start()
        log.info("node %s joined the cluster at %s (prefix %s)", self.name, self.config.redis, self.keys.prefix)

    def _take_over(self, previous: dict[str, Any]) -> None:
        """This name is registered already: a crashed or restarted process of this node (its
        sessions are gone with it: reap them now rather than after the lease), or a second
        live node given the same name (refused)."""
        if previous["alive"] and (previous.get("host") != socket.gethostname() or _running(previous.get("pid"))):
            raise RuntimeError(f"a live node named {self.name!r} (pid {previous.get('pid')} on "
                               f"{previous.get('host')}) is already in the cluster; give every node its own node_name")
        users = self.registry.reap(self.name, restarted=True)
        log.warning("node %s restarted: the %d sessions of its previous process went offline", self.name, len(users))
        self.reaped_users += len(users)
        self.reactor.call_soon_threadsafe(self._reaped, self.name, users)

    def stop(self) -> None:
        self._stop.set()
        if self._lease_thread is not None:
            self._lease_thread.join(5)
        self.bus.stop()
        try:
            self.registry.leave()
        except UNREACHABLE as exc:
            log.warning("could not leave the cluster cleanly (%s): other nodes reap this one", exc)
        self.client.close()

    # -- sessions ------------------------------------------------------------------------------------
    def claim(self, user_id: int, conn_id: int, token_hash: str, delete_token: Callable[[str], Any]) -> Holder | None:
        """Worker thread: make this connection the user's one session in the cluster; the
        replaced session's token is deleted before this returns (so before any KICKED)."""
        try:
            old = self.directory.bind(user_id, conn_id, token_hash)
        except UNREACHABLE as exc:
            raise unavailable(exc) from None
        if old is not None and old.token_hash != token_hash:
            delete_token(old.token_hash)
        try:
            for bucket in self.session_buckets:
                bucket.load(user_id)
        except UNREACHABLE as exc:
            log.warning("user=%d: rate limits start full here (Redis unreachable: %s)", user_id, exc)
        return old

    def release(self, user_id: int, conn: "Connection") -> bool:
        """Worker thread: forget the connection's session; True if it still held it (the user
        went offline), False if a newer session elsewhere holds it."""
        try:
            return self.directory.unbind(user_id, conn.id, conn.token_hash or "")
        except UNREACHABLE as exc:
            log.warning("%s cannot unbind the session (Redis unreachable: %s)", conn.who, exc)
            return True

    def kick_remote(self, old: Holder, user_id: int, frame: bytes) -> None:
        """Reactor thread: tell the node holding the replaced session to kick it."""
        self.bus.send_to_node(old.node, KICK, old.conn_id,
                              json.dumps({"user_id": user_id, "frame": frame.hex()}).encode())

    def call(self, node: str, op: str, **args: Any) -> None:
        """Reactor thread: run ``calls[op](args)`` on another node's reactor."""
        self.bus.send_to_node(node, CALL, 0, json.dumps({"op": op, **args}).encode())

    def call_user(self, user_id: int, op: str, **args: Any) -> None:
        """Reactor thread: run ``calls[op]({"user_id": user_id, ...})`` on the node holding the
        user's session, if any."""
        self.bus.send_to_users((user_id,), USER_CALL, json.dumps({"op": op, **args}).encode())

    def _deliver(self, records: list[Record]) -> None:
        """Reactor thread: a batch that arrived on this node's channel."""
        for kind, ident, payload in records:
            if kind == TO_USER:
                self.router.deliver_records(ident, payload)
            elif kind == KICK:
                self._kicked(ident, json.loads(payload))
            elif kind in (CALL, USER_CALL):
                body = json.loads(payload)
                if kind == USER_CALL:
                    body["user_id"] = ident
                handler = self.calls.get(body.get("op"))
                if handler is None:
                    log.error("unknown cluster call %r", body.get("op"))
                    continue
                try:
                    handler(body)
                except Exception:
                    log.exception("cluster call %r failed", body.get("op"))
            elif kind in self.record_handlers:
                try:
                    self.record_handlers[kind](ident, payload)
                except Exception:
                    log.exception("cluster record of kind %d failed", kind)

    def _kicked(self, conn_id: int, body: dict) -> None:
        conn = self.connections.get(conn_id)
        if conn is None or conn.closed or conn.kicked:
            return
        if conn.user_id is not None and conn.user_id != body["user_id"]:
            return
        conn.kicked = True
        if conn.user_id is not None:
            self.sessions.unbind(conn.user_id, conn)      # not offline: the session moved
        conn.send(bytes.fromhex(body["frame"]))
        conn.close_after_flush("kicked: the account logged in on another node")

    # -- lease, reaping, re-registering ---------------------------------------------------------------
    def _status(self) -> dict[str, Any]:
        return {"node": self.name, "advertise": self.advertise, "admin": self.admin_address,
                "host": socket.gethostname(), "pid": os.getpid(), "started": self.started,
                "updated": time.time(), **self.node_status()}

    def _lease_loop(self) -> None:
        interval = max(0.05, min(FLUSH_INTERVAL, LEASE_SHARE * self.config.heartbeat_timeout / 4))
        while not self._stop.wait(interval):
            try:
                self._tick()
            except UNREACHABLE as exc:
                if self._registered:
                    log.error("Redis unreachable (%s): logins, cross-node events and room changes wait "
                              "for it; this node goes on serving its own users", exc)
                self._registered = False
            except Exception:
                log.exception("cluster lease tick failed")

    def _tick(self) -> None:
        if not self.client.hexists(self.keys.nodes, self.name):
            self._register_again()
        self.registry.renew(self._status())
        self._registered = True
        for bucket in self.session_buckets:
            bucket.flush()
        for node in self.registry.dead_nodes():
            users = self.registry.reap(node)
            log.warning("node %s stopped renewing its lease: reaped, %d users went offline", node, len(users))
            self.reaped_users += len(users)
            self.reactor.call_soon_threadsafe(self._reaped, node, users)

    def _register_again(self) -> None:
        """Lease thread: Redis lost this node (restart, or the lease ran out): put back its sessions."""
        live = [(uid, conn.id, conn.token_hash or "") for uid, conn in self.sessions.snapshot()]
        taken = self.directory.rebind(live)
        log.warning("registered again with Redis: %d of %d sessions kept", len(live) - len(taken), len(live))
        if taken:
            self.reactor.call_soon_threadsafe(self._taken_meanwhile, taken)
        for hook in self.registered_again:
            self.reactor.call_soon_threadsafe(hook)

    def _taken_meanwhile(self, users: list[int]) -> None:
        """Reactor thread: these users logged in on another node while this one could not tell
        (Redis lost): the session there wins, the one here is closed as kicked."""
        for user_id in users:
            conn = self.sessions.get(user_id)
            if conn is None or conn.closed:
                continue
            conn.kicked = True
            self.sessions.unbind(user_id, conn)
            conn.send(wire.encode_json(PacketType.KICKED, {"reason": "your account logged in from another place",
                                                           "address": "", "time": int(time.time() * 1000)}))
            conn.close_after_flush("kicked: the account logged in on another node while Redis was lost")

    def _redis_back(self) -> None:
        """Reactor thread: the subscriber reconnected; the next lease tick re-registers."""
        log.info("node %s: Redis reachable again", self.name)
        for hook in self.redis_back:
            try:
                hook(self.bus.lost_at)
            except Exception:
                log.exception("a Redis-back hook failed")

    def _reaped(self, node: str, users: list[int]) -> None:
        for hook in self.users_reaped:
            try:
                hook(node, users)
            except Exception:
                log.exception("a users-reaped hook failed")

    def status(self) -> dict[str, Any]:
        return {"cluster_node": self.name, "cluster_reaped_users": self.reaped_users, **self.bus.status()}

    def cluster_status(self) -> dict[str, dict[str, Any]]:
        """Every node's last registered status (for ``meeting-server status``); worker thread."""
        return self.registry.nodes()
