"""HELLO, HEARTBEAT, REGISTER, LOGIN, RESUME, LOGOUT; kicking a session replaced elsewhere."""
from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Callable

from common import frame as wire
from common import limits, messages
from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from common.validation import check_password, normalize_nickname, normalize_phone

from ..clock import now_ms
from ..mediator import Request, Routes
from ..passwords import ScryptParams, dummy_verify, hash_password, verify_password
from ..storage import DuplicateError, User
from ..throttle import LoginThrottle
from .replies import Replies
from .views import avatar_view, user_view

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from ..cluster.directory import Holder
    from ..cluster.node import ClusterNode
    from ..config import ServerConfig
    from ..connection import Connection
    from ..ratelimit import FrameLimits, RateLimits
    from ..reactor import Reactor
    from ..sessions import Sessions
    from ..storage import Storage

log = logging.getLogger("server.session")

SERVER_NAME = "real-time-meeting/0.1"
SESSION_PURGE_INTERVAL = 3600.0   # seconds between sweeps of expired session tokens
KICKED_ELSEWHERE = "logged_in_elsewhere"   # KICKED reason: docs/PROTOCOL.md lists every reason


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionHandler:
    """Logging in and out; a user has one session (a newer one kicks the older)."""

    def __init__(self, config: "ServerConfig", storage: "Storage", sessions: "Sessions", cluster: "ClusterNode | None",
                 rate_limits: "RateLimits", frame_limits: "FrameLimits", reactor: "Reactor", pool: "Executor",
                 scrypt: ScryptParams, hash_slots: threading.BoundedSemaphore,
                 replies: Replies, authenticated: Callable[["Connection"], None],
                 session_started: Callable[["Connection", bool], None]) -> None:
        """``authenticated`` is told of a connection that logged in, before its session is
        bound; ``session_started`` once it is (``replaced``: it took an older session's place)."""
        self.config = config
        self.storage = storage
        self.sessions = sessions
        self.cluster = cluster
        self.rate_limits = rate_limits
        self.frame_limits = frame_limits
        self.reactor = reactor
        self.pool = pool
        self.scrypt = scrypt
        self.hash_slots = hash_slots
        self.replies = replies
        self.authenticated = authenticated
        self.session_started = session_started
        self.throttle = LoginThrottle(config.login_failures_per_account, config.login_failures_per_address,
                                      config.login_failure_window,
                                      windows=cluster.window if cluster is not None else None)
        reactor.call_every(SESSION_PURGE_INTERVAL, lambda: pool.submit(self.purge_expired_sessions))

    def routes(self) -> Routes:
        config = self.config
        throttle = self.throttle
        failures_by_address = throttle.addresses
        routes = Routes()
        handler = routes.handler

        def require_hello(req: Request) -> None:
            if not req.conn.hello_version:
                raise ApiError(ErrorCode.BAD_REQUEST, "send HELLO first")
            if req.conn.user_id is not None:
                raise ApiError(ErrorCode.ALREADY_LOGGED_IN)

        @handler(PacketType.HELLO, auth=False)
        def hello(req: Request) -> dict:
            version = req.body.version
            if version != limits.PROTOCOL_VERSION:
                raise ApiError(ErrorCode.UNSUPPORTED_VERSION,
                               f"protocol version {version} is not supported; this server speaks "
                               f"{limits.PROTOCOL_VERSION}")
            req.conn.hello_version = version
            return {
                "version": limits.PROTOCOL_VERSION,
                "server": SERVER_NAME,
                "heartbeat_interval": config.heartbeat_interval,
                "heartbeat_timeout": config.heartbeat_timeout,
                "limits": {
                    "max_control_body": self.frame_limits.max_control_body,
                    "max_file_chunk": limits.MAX_FILE_CHUNK,
                    "max_media_payload": limits.MAX_MEDIA_PAYLOAD,
                    "max_chat_bytes": limits.MAX_CHAT_BYTES,
                    "max_avatar_bytes": limits.MAX_AVATAR_BYTES,
                    "max_file_size": config.max_file_size,
                    "room_max_members": config.room_max_members,
                },
            }

        @handler(PacketType.HEARTBEAT, auth=False)
        def heartbeat(req: Request) -> dict:
            return {"time": now_ms()}

        @handler(PacketType.REGISTER, blocking=True, auth=False)
        def register(req: Request) -> dict:
            require_hello(req)
            body: messages.Register = req.body
            phone = normalize_phone(body.phone)
            password = check_password(body.password)
            nickname = normalize_nickname(body.nickname)
            self.rate_limits.registration(req.conn.address)
            wait = failures_by_address.retry_after(("register", req.conn.address))
            if wait:
                raise ApiError(ErrorCode.RATE_LIMITED, retry_after=round(wait, 1))
            with self.hash_slots:
                password_hash = hash_password(password, self.scrypt)
            try:
                user = self.storage.create_user(phone, password_hash, nickname, now_ms())
            except DuplicateError:
                failures_by_address.add(("register", req.conn.address))
                raise ApiError(ErrorCode.PHONE_TAKEN) from None
            log.info("%s registered user %d", req.conn.who, user.id)
            return {"user": user_view(user)}

        @handler(PacketType.LOGIN, blocking=True, auth=False)
        def login(req: Request) -> dict:
            require_hello(req)
            body: messages.Login = req.body
            phone = normalize_phone(body.phone)
            password = body.password
            address = req.conn.address
            found = self.storage.get_credentials(phone)
            known = found is not None and (throttle.is_known(phone, address)
                                           or self.storage.has_session_from(found[0].id, address))
            wait = throttle.reserve(phone, address, known)
            if wait:
                raise ApiError(ErrorCode.TOO_MANY_ATTEMPTS,
                               f"too many failed logins, try again in {int(wait) + 1} s", retry_after=round(wait, 1))
            with self.hash_slots:
                if found is None:
                    dummy_verify(self.scrypt)
                verified = found is not None and verify_password(password, found[1])
            if not verified:
                log.info("%s failed login for a phone number ending %s", req.conn.who, phone[-2:])
                raise ApiError(ErrorCode.WRONG_CREDENTIALS)
            user = found[0]
            throttle.succeeded(phone, address, known)
            token = secrets.token_urlsafe(32)
            hashed = token_hash(token)
            replaced = self.claim(req.conn, user.id, hashed)
            self.storage.create_session(hashed, user.id, req.conn.address, now_ms(),
                                          now_ms() + int(config.session_ttl * 1000))
            req.on_reactor(self.start_session, req.conn, user, hashed, False, replaced)
            return session_reply(user, token)

        @handler(PacketType.RESUME, blocking=True, auth=False)
        def resume(req: Request) -> dict:
            require_hello(req)
            token = req.body.token
            wait = failures_by_address.retry_after(req.conn.address)
            if wait:
                raise ApiError(ErrorCode.TOO_MANY_ATTEMPTS, retry_after=round(wait, 1))
            hashed = token_hash(token)
            user_id = self.storage.session_user(hashed, now_ms())
            user = self.storage.get_user(user_id) if user_id is not None else None
            if user is None:
                failures_by_address.add(req.conn.address)
                raise ApiError(ErrorCode.INVALID_TOKEN)
            replaced = self.claim(req.conn, user.id, hashed)
            req.on_reactor(self.start_session, req.conn, user, hashed, True, replaced)
            return session_reply(user, token)

        @handler(PacketType.LOGOUT, blocking=True)
        def logout(req: Request) -> None:
            if req.conn.token_hash:
                self.storage.delete_session(req.conn.token_hash)

            def finish() -> None:
                """The reply, then the session ends at once (the user is offline before the
                client reads the reply); a reply the socket cannot take yet is flushed first."""
                conn = req.conn
                self.replies.send_result(conn, req.request_id, {})
                conn.flush()
                if conn.out:
                    conn.close_after_flush("logged out")
                else:
                    conn.close("logged out")
            req.on_reactor(finish)

        def session_reply(user: User, token: str) -> dict:
            return {"user": user_view(user), "token": token, "server_time": now_ms(),
                    "heartbeat_interval": config.heartbeat_interval}

        return routes

    def purge_expired_sessions(self) -> None:
        """Worker: delete expired tokens (a session that is never resumed is otherwise kept)."""
        try:
            removed = self.storage.delete_expired_sessions(now_ms())
        except Exception as exc:
            log.warning("could not purge expired sessions: %s", exc)
            return
        if removed:
            log.info("purged %d expired session tokens", removed)

    def claim(self, conn: "Connection", user_id: int, hashed: str) -> "Holder | None":
        """Worker thread, in a cluster: bind the user's one session in the directory now, so a
        login racing on another node loses or wins atomically; the replaced session's token is
        dead before anyone sends its KICKED. Returns where the replaced session lives (None
        without a cluster: the reactor binds the process's own sessions)."""
        if self.cluster is None:
            return None
        return self.cluster.claim(user_id, conn.id, hashed, self.storage.delete_session)

    def start_session(self, conn: "Connection", user: User, hashed: str, resumed: bool,
                      replaced: "Holder | None" = None) -> None:
        """Reactor thread: bind the user to this connection, kicking any older session (on this
        node, or through the cluster on the node that ``replaced`` names)."""
        if conn.closed or conn.kicked:
            return
        conn.user_id = user.id
        conn.nickname = user.nickname
        conn.avatar = messages.to_dict(avatar_view(user))
        conn.token_hash = hashed
        self.authenticated(conn)
        old = self.sessions.bind(user.id, conn)
        if old is not None:
            self.kick(old, conn, token_deleted=replaced is not None)
        elif replaced is not None and replaced.node != self.cluster.name:
            self.cluster.kick_remote(replaced, user.id, kicked_frame(conn.address))
        log.info("%s logged in (%s)", conn.who, "token" if resumed else "password")
        self.session_started(conn, old is not None or replaced is not None)

    def kick(self, old: "Connection", new: "Connection", token_deleted: bool = False) -> None:
        """End the session ``old`` that ``new`` replaced. Its token is deleted before KICKED is
        sent (``token_deleted``: in a cluster it already was, where the directory was bound), so a
        client that reacts to KICKED by resuming with it is refused; meanwhile the old
        connection's requests are no longer handled (``kicked``)."""
        old.kicked = True
        address = new.address

        def tell(revoked: Future | None) -> None:
            if revoked is not None and revoked.exception() is not None:
                log.error("%s could not delete the token of a kicked session: %s", old.who, revoked.exception())
            old.send(kicked_frame(address))
            old.close_after_flush(f"kicked: the account logged in from {address}")

        if token_deleted or not old.token_hash or old.token_hash == new.token_hash:
            tell(None)
            return
        try:
            future = self.pool.submit(self.storage.delete_session, old.token_hash)
        except RuntimeError:   # the pool is shut down: the server is stopping
            tell(None)
            return
        future.add_done_callback(lambda fut: self.reactor.call_soon_threadsafe(tell, fut))


def kicked_frame(address: str) -> bytes:
    return wire.encode_json(PacketType.KICKED, messages.Kicked(
        reason=KICKED_ELSEWHERE, message="your account logged in from another place", address=address,
        time=now_ms()))
