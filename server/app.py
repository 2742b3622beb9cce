"""The server: wires the reactor, connections, mediator, worker pool, storage and handlers."""
from __future__ import annotations

import itertools
import logging
import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable

from common import frame as wire
from common import messages
from common.errors import ApiError, ErrorCode
from common.packets import PacketType

from .admin import AdminServer, open_admin
from .chat_writer import GroupCommitWriter
from .config import ServerConfig
from .connection import Connection
from .daemon import Daemon
from .handlers.chat import CHAT_WRITES, ChatHandler
from .handlers.files import FilesHandler
from .handlers.friends import FriendsHandler
from .handlers.media import MediaHandler
from .handlers.profile import ProfileHandler
from .handlers.rooms import RoomsHandler
from .handlers.session import SessionHandler
from .mediator import Mediator
from .passwords import ScryptParams
from .presence import Presence
from .ratelimit import FrameLimits, RateLimits
from .reactor import Reactor
from .relay import Relay
from .room_keeper import RoomKeeper
from .rooms import RoomRegistry
from .router import LocalRouter
from .sessions import Sessions
from .stats import Stats
from .storage import Storage, open_storage
from .transfers import FileLink, TransferService

if TYPE_CHECKING:
    from .cluster.peerlink import PeerLinks   # redis-py is imported by a cluster node only

log = logging.getLogger("server")

SWEEP_INTERVAL = 1.0
WORKER_NICENESS = 10


def lower_thread_priority() -> None:
    """Workers run at a lower priority than the reactor thread, so CPU-bound work (password
    hashing) never delays the reactor's replies by more than a scheduler tick (Linux nices
    threads individually)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except (AttributeError, OSError):
        pass


class Listener:
    def __init__(self, server: "Server", sock: socket.socket) -> None:
        self.server = server
        self.sock = sock

    def on_readable(self) -> None:
        for _ in range(256):
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            self.server.accept(sock, address)

    def on_writable(self) -> None:
        pass


class Server:
    def __init__(self, config: ServerConfig, storage: Storage | None = None) -> None:
        self.config = config
        self.storage = storage or open_storage(config.db)
        self.reactor = Reactor()
        self.sessions = Sessions()
        self.connections: dict[int, Connection] = {}
        self.cluster = None   # server.cluster.node.ClusterNode when config.redis is set
        room_members = self._room_members
        if config.redis:
            from .cluster.node import ClusterNode   # redis-py is imported by a cluster node only
            self.cluster = ClusterNode(config, self.reactor, self.sessions, self.connections, room_members,
                                       self._node_status)
            self.router = self.cluster.router
            self.rate_limits = RateLimits(config, bucket=self.cluster.token_bucket)
        else:
            self.router = LocalRouter(self.reactor, self.sessions, room_members)
            self.rate_limits = RateLimits(config)
        self.stats = Stats()
        self.pool = ThreadPoolExecutor(max_workers=config.pool_threads, thread_name_prefix="worker",
                                       initializer=lower_thread_priority)
        self.mediator = Mediator(self.reactor, self.pool, self.stats)
        self.frame_limits = FrameLimits(config, self.mediator.handlers.__contains__)
        self.scrypt = ScryptParams(config.scrypt_n, config.scrypt_r, config.scrypt_p)
        # Password hashing is CPU- and memory-bound: at most one hash per core at a time.
        self.hash_slots = threading.BoundedSemaphore(os.cpu_count() or 1)
        self.unauthenticated_by_address: dict[str, int] = {}
        self.started = time.time()
        self.ssl_context: ssl.SSLContext | None = None
        self.listener: Listener | None = None
        self.admin: AdminServer | None = None   # once listening, unless admin_socket = off
        # Traffic of connections already closed, so the status shows totals since the start.
        self.closed_traffic = {"bytes_in": 0, "bytes_out": 0, "frames_in": 0, "frames_out": 0}
        self.daemon: Daemon | None = None       # once listening
        self.port = 0
        self.stopping = False
        self.stopped = threading.Event()
        self._ids = itertools.count(1)
        # The services the handlers share, in dependency order.
        self.presence = Presence(self.reactor, self.pool, self.storage, self.sessions, self.router, self.cluster)
        self.rooms = self._room_registry()
        self.links = self._media_links()
        self.relay = Relay(config, self.stats, self.reactor, self.router, self.rooms, self.links)
        self.chat_writer = GroupCommitWriter(self.storage.db, self.reactor, CHAT_WRITES, config.chat_batch_max)
        self.transfers = TransferService(config, self.storage, self.router, self.sessions, self.reactor, self.pool,
                                         self._file_link())
        # The handlers, one per domain, each given what it uses.
        handlers = (
            SessionHandler(config, self.storage, self.sessions, self.cluster, self.rate_limits, self.frame_limits,
                           self.reactor, self.pool, self.scrypt, self.hash_slots, self.mediator, self.authenticated,
                           self._session_started),
            FriendsHandler(self.storage, self.router, self.presence, self.rate_limits, self.mediator),
            ProfileHandler(self.storage, self.router, self.rate_limits),
            ChatHandler(self.storage, self.router, self.presence, self.rate_limits, self.chat_writer, self.mediator),
            RoomsHandler(self.rooms, self.rate_limits),
            MediaHandler(self.relay),
            FilesHandler(config, self.storage, self.router, self.rate_limits, self.reactor, self.transfers),
        )
        for handler in handlers:
            self.mediator.register(handler.routes())
        # Hooks, all called on the reactor thread. Sessions: presence first, then the rooms
        # (the relay follows the rooms through the registry's own hooks).
        self.session_started: list[Callable[[Connection, bool], None]] = [
            self.presence.session_started, self.rooms.session_started]
        self.session_ended: list[Callable[[Connection, str, bool], None]] = [
            self.presence.session_ended, self.rooms.session_ended, self.transfers.session_ended]
        self.status_providers: list[Callable[[], dict[str, Any]]] = [
            self.rate_limits.status, *([self.cluster.status] if self.cluster is not None else []),
            self.presence.status, self.rooms.status, self.relay.status, self.chat_writer.status,
            self.transfers.figures]
        self.shutdown_hooks: list[Callable[[], None]] = [
            self.rooms.shutdown, self.chat_writer.stop, self.transfers.close_all]
        if self.cluster is not None:
            from .cluster.catchup import ChatCatchUp
            catch_up = ChatCatchUp(self.reactor, self.pool, self.storage, self.sessions, self.router, self.cluster)
            self.status_providers.append(catch_up.status)

    def _file_link(self) -> FileLink | None:
        """How the halves of a file transfer on two nodes reach each other (a cluster only)."""
        if self.cluster is None:
            return None
        from .cluster.files import ClusterFileLink
        return ClusterFileLink(self.cluster)

    def _room_registry(self) -> RoomRegistry:
        if self.cluster is None:
            return RoomRegistry(self.config, self.reactor, self.router, self.sessions, RoomKeeper(self.storage))
        from .cluster.rooms import ClusterRooms
        return ClusterRooms(self.config, self.reactor, self.router, self.sessions, self.cluster)

    def _media_links(self) -> "PeerLinks | None":
        """A cluster node's links to the other nodes, over which the relay cascades media."""
        if self.cluster is None:
            return None
        from .cluster.peerlink import PeerLinks
        advertise = self.config.advertise.rsplit(":", 1)[0].strip("[]") if self.config.advertise else self.config.host
        return PeerLinks(self.reactor, self.pool, self.cluster.client, self.cluster.keys, self.cluster.name,
                         self.config.host, advertise, self.config.link_port)

    def _room_members(self, room_id: int) -> list[int]:
        """The router's view of a room (the router is built before the room registry, which
        sends through it)."""
        return self.rooms.router_members(room_id)

    def _node_status(self) -> dict[str, Any]:
        """What this node publishes for the cluster status (any thread: plain reads)."""
        return {"users": len(self.sessions), "connections": len(self.connections),
                "rooms": len(self.rooms.rooms)}

    def next_connection_id(self) -> int:
        return next(self._ids)

    # -- start and accept ----------------------------------------------------------------------
    def listen(self, reuse_port: bool = False) -> int:
        """Bind and listen; returns the port (useful with port 0). ``reuse_port``: share the
        port with the other workers of a supervisor (SO_REUSEPORT)."""
        self.storage.check_schema()
        if self.config.tls_cert:
            from .tls import server_context
            self.ssl_context = server_context(self.config.tls_cert, self.config.tls_key)
        sock = socket.create_server((self.config.host, self.config.port), backlog=1024, reuse_port=reuse_port)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.listener = Listener(self, sock)
        self.reactor.add_reader(sock, self.listener)
        self.reactor.call_every(SWEEP_INTERVAL, self._sweep)
        self.admin = open_admin(self.config, self.reactor, self.status)
        self.daemon = Daemon(self.reactor, self.port, self.status)
        if self.cluster is not None:
            self.cluster.start(self.port, str(self.config.admin_socket_path) if self.admin is not None else "")
            self.links.start(self.relay)
        self.reactor.call_soon(self.daemon.start)  # READY=1 once the reactor serves
        mode = "TLS" if self.ssl_context else "plain TCP (no encryption: use TLS outside loopback)"
        log.info("listening on %s:%d (%s), database %s, %d pool threads", self.config.host, self.port, mode,
                 self.storage.backend, self.config.pool_threads)
        return self.port

    def accept(self, sock: socket.socket, address: tuple) -> None:
        peer = f"{address[0]}:{address[1]}"
        if self.stopping or len(self.connections) >= self.config.max_connections:
            self._refuse(sock, peer, "connection limit reached" if not self.stopping else "shutting down")
            return
        if self.unauthenticated_by_address.get(address[0], 0) >= self.config.max_unauthenticated_per_address:
            self._refuse(sock, peer, "too many unauthenticated connections from this address")
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (ssl.SSLError, OSError) as exc:
                log.info("peer=%s TLS setup failed: %s", peer, exc)
                sock.close()
                return
        conn = Connection(self, sock, address)
        self.connections[conn.id] = conn
        self.unauthenticated_by_address[conn.address] = self.unauthenticated_by_address.get(conn.address, 0) + 1
        self.stats.accepted += 1
        log.debug("%s connected", conn.who)

    def _refuse(self, sock: socket.socket, peer: str, reason: str) -> None:
        self.stats.refused += 1
        log.warning("peer=%s user=- refused: %s", peer, reason)
        try:
            sock.setblocking(False)
            code = ErrorCode.SHUTTING_DOWN if self.stopping else ErrorCode.TOO_MANY_CONNECTIONS
            sock.send(wire.encode_error(ApiError(code, reason)))
        except OSError:
            pass
        sock.close()

    def authenticated(self, conn: Connection) -> None:
        """Called once when a connection logs in (reactor thread)."""
        self._forget_unauthenticated(conn)

    def _forget_unauthenticated(self, conn: Connection) -> None:
        count = self.unauthenticated_by_address.get(conn.address, 0) - 1
        if count > 0:
            self.unauthenticated_by_address[conn.address] = count
        else:
            self.unauthenticated_by_address.pop(conn.address, None)

    def connection_closed(self, conn: Connection, reason: str) -> None:
        self.connections.pop(conn.id, None)
        for key in self.closed_traffic:
            self.closed_traffic[key] += getattr(conn, key)
        if conn.user_id is None:
            self._forget_unauthenticated(conn)
            return
        went_offline = self.sessions.unbind(conn.user_id, conn)
        if self.cluster is not None and self.stopping:
            return   # the node gives its lease up: a peer reaps these sessions and tells their friends
        if went_offline and self.cluster is not None:
            # Offline only if no node took the session over meanwhile (the directory knows).
            future = self.pool.submit(self.cluster.release, conn.user_id, conn)
            future.add_done_callback(lambda fut: self.reactor.call_soon_threadsafe(
                self._session_ended, conn, reason, fut.result()))
            return
        self._session_ended(conn, reason, went_offline)

    def _session_started(self, conn: Connection, replaced: bool) -> None:
        for hook in self.session_started:
            try:
                hook(conn, replaced)
            except Exception:
                log.exception("%s error in a session-start hook", conn.who)

    def _session_ended(self, conn: Connection, reason: str, went_offline: bool) -> None:
        for hook in self.session_ended:
            try:
                hook(conn, reason, went_offline)
            except Exception:
                log.exception("%s error in a session-end hook", conn.who)

    # -- timers ------------------------------------------------------------------------------------
    def _sweep(self) -> None:
        now = time.monotonic()
        timeout = self.config.heartbeat_timeout
        deadline = self.config.login_deadline
        for conn in list(self.connections.values()):
            if conn.closed:
                continue
            if conn.handshaking and now - conn.created > self.config.tls_handshake_timeout:
                conn.close(f"TLS handshake not finished within {self.config.tls_handshake_timeout:g} s")
            elif now - conn.last_recv > timeout and not conn.busy:   # busy: the peer waits for us
                conn.close(f"heartbeat timeout ({timeout:g} s silent)")
            elif conn.user_id is None and now - conn.created > deadline and not conn.busy:
                conn.send(wire.encode_error(ApiError(ErrorCode.LOGIN_DEADLINE)))
                conn.close_after_flush(f"no login within {deadline:g} s", deadline=1.0)

    # -- status ---------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Live figures for the admin status and sd_notify (reactor thread)."""
        conns = list(self.connections.values())
        figures: dict[str, Any] = {
            "uptime_s": round(time.time() - self.started, 1),
            "connections": len(conns),
            "users_online": len(self.sessions),
            "pool_queue": self.stats.pool_submitted - self.stats.pool_completed,
            "reactor_loops": self.reactor.loop_count,
        }
        for key, closed in self.closed_traffic.items():   # totals since the start
            figures[key] = closed + sum(getattr(c, key) for c in conns)
        figures.update(asdict(self.stats))
        for provider in self.status_providers:
            figures.update(provider())
        return figures

    # -- running and stopping ------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Run the reactor on this thread until shutdown, then release everything."""
        try:
            self.reactor.run()
        finally:
            self._release()

    def start_in_thread(self) -> threading.Thread:
        """For tests and embedding: listen, then run the reactor on a new thread."""
        if self.listener is None:
            self.listen()
        thread = threading.Thread(target=self.serve_forever, name="reactor", daemon=True)
        thread.start()
        return thread

    def request_shutdown(self, reason: str = "server shutting down") -> None:
        """Thread- and signal-safe: drain gracefully, then stop the reactor."""
        self.reactor.call_soon_threadsafe(self._begin_shutdown, reason)

    def _begin_shutdown(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("shutting down: %s (%d connections)", reason, len(self.connections))
        if self.listener is not None:
            self.reactor.remove(self.listener.sock)
            self.listener.sock.close()
        for hook in self.shutdown_hooks:
            hook()
        if self.daemon is not None:
            self.daemon.stopping(len(self.connections))
        going_away = wire.encode_json(PacketType.GOING_AWAY, messages.GoingAway(
            reason="shutdown", message=reason, reconnect=True, retry_after=1.0))
        deadline = time.monotonic() + self.config.shutdown_timeout
        self._drain(going_away, deadline)

    def _drain(self, going_away: bytes, deadline: float) -> None:
        """Wait for blocking handlers to finish and their replies to leave, then close."""
        busy = [c for c in self.connections.values() if c.busy]
        if busy and time.monotonic() < deadline:
            self.reactor.call_later(0.02, self._drain, going_away, deadline)
            return
        for conn in list(self.connections.values()):
            conn.send(going_away)
            conn.close_after_flush("server shutting down", deadline=max(0.1, deadline - time.monotonic()))
        self._wait_closed(deadline)

    def _wait_closed(self, deadline: float) -> None:
        if self.connections and time.monotonic() < deadline:
            self.reactor.call_later(0.02, self._wait_closed, deadline)
            return
        for conn in list(self.connections.values()):
            conn.close("shutdown deadline")
        self.reactor.stop()

    def _release(self) -> None:
        if self.admin is not None:
            self.admin.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.cluster is not None:
            self.links.stop()
            self.cluster.stop()
        self.reactor.close()
        self.storage.close()
        log.info("stopped")
        self.stopped.set()
