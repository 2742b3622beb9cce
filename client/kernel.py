"""The client core's mediator: state, requests with timeouts, events, heartbeats, reconnects.

It works without any window. The Tk UI, the bots and the tests all drive it. What the bytes
mean (request ids, replies versus events, typed bodies) is ``common.protocol.ClientProtocol``;
this module adds the thread, the futures and the timeouts around it. Callbacks from the
network thread never block; follow-up work that needs requests (fetching lists after a login,
re-sending the outbox after a reconnect) runs on a small task thread.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Sequence

from common import limits, messages
from common.errors import ApiError, ErrorCode
from common.frame import Frame
from common.packets import PacketType
from common.protocol import BadEvent, BinaryEvent, ClientProtocol, Failure, Refusal, Reply, ServerEvent
from common.validation import check_password, normalize_nickname, normalize_phone

from .buffers import BufferPool
from .chat import ChatClient
from .events import Event, EventKind, SessionState
from .files import FilesClient
from .friends import FriendsClient
from .link import PROTOCOL_ERROR_REASON, ConnectError, Link
from .profile import ProfileClient
from .rooms import RoomsClient
from .servers import Address, format_address
from .tls import TlsOptions

log = logging.getLogger("client")

CLIENT_NAME = "real-time-meeting-client/0.1"
POOL_BYTES = 8 * 1024 * 1024   # large frame buffers kept for reuse (file chunks, both directions)


class ConnectionLost(Exception):
    """The request could not complete because the link to the server is down."""


class NotAMeetingServer(ConnectError):
    """Something answers at the address, but not this protocol (a web server, SSH, TLS...)."""


class ClientKernel:
    def __init__(self, host: str, port: int, *, tls: TlsOptions | None = None,
                 request_timeout: float = 10.0, reconnect: bool = True,
                 backoff_base: float = 0.5, backoff_max: float = 30.0, more_servers: Sequence[Address] = ()) -> None:
        """``more_servers``: other servers of the same cluster. When the one in use does not
        answer or goes away, the next is tried (with the same backoff), and the session
        resumes there with its token."""
        self.servers: list[Address] = [(host, port), *(s for s in more_servers if s != (host, port))]
        self._server = 0
        self.request_timeout = request_timeout
        self.reconnect_enabled = reconnect
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        ssl_context, fingerprint_check = (tls.build() if tls else (None, None))
        self.buffers = BufferPool(POOL_BYTES)
        self._link = Link(self, self.buffers, ssl_context, fingerprint_check)
        self._listeners: list[Callable[[Event], None]] = []
        self._packet_handlers: dict[int, Callable[[dict], None]] = {}
        self._binary_handlers: dict[int, Callable[[bytes], None]] = {}
        self._protocol = ClientProtocol()
        self._pending: dict[int, Future] = {}
        self._pending_lock = threading.Lock()    # guards _protocol and _pending
        self._tasks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="client-tasks")
        self.session_hooks: list[Callable[[bool], None]] = []   # run on the task thread after (re)login
        self.user: dict | None = None
        self.token: str | None = None
        self.server_info: dict = {}
        self.heartbeat_interval = 10.0
        self.heartbeat_timeout = 30.0
        self.last_rtt: float | None = None
        self.state = SessionState.OFFLINE
        self._want_session = False
        self._reconnect_at: float | None = None
        self._reconnect_floor = 0.0
        self._attempt = 0
        self._last_heartbeat = 0.0
        self._hello_done = False
        self._closed = False
        self.on_packet(PacketType.KICKED, self._on_kicked)
        self.on_packet(PacketType.GOING_AWAY, self._on_going_away)
        self.friends = FriendsClient(self)
        self.chat = ChatClient(self)
        self.profile = ProfileClient(self)
        self.rooms = RoomsClient(self)
        self.files = FilesClient(self, self.chat.remember)

    @classmethod
    def for_servers(cls, servers: Sequence[Address], **options: Any) -> "ClientKernel":
        """A kernel for a cluster: ``servers`` in the order they are tried."""
        return cls(*servers[0], more_servers=servers[1:], **options)

    @property
    def host(self) -> str:
        """The server in use (or tried next)."""
        return self.servers[self._server][0]

    @property
    def port(self) -> int:
        return self.servers[self._server][1]

    def _next_server(self) -> None:
        self._server = (self._server + 1) % len(self.servers)

    # -- events ---------------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def emit(self, kind: EventKind, **data: Any) -> None:
        event = Event(kind, data)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", kind)

    def on_packet(self, packet_type: PacketType, fn: Callable[[dict], None]) -> None:
        """Register what to do with a server event packet (called on the network thread with
        the body, validated against its ``common.messages`` definition, as a dict)."""
        self._packet_handlers[packet_type] = fn

    def on_binary(self, packet_type: PacketType, fn: Callable[[bytes], None]) -> None:
        self._binary_handlers[packet_type] = fn

    def run_task(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run blocking follow-up work off the network thread."""
        return self._tasks.submit(fn, *args)

    # -- requests ---------------------------------------------------------------------------------
    def request_async(self, packet_type: PacketType, body: messages.Body | dict | bytes | None = None) -> Future:
        future: Future = Future()
        with self._pending_lock:
            request_id, data = self._protocol.request(packet_type, body)
            self._pending[request_id] = future
        if not self._link.send(data):
            self._forget(request_id)
            future.set_exception(ConnectionLost("not connected to the server"))
        future.request_id = request_id  # type: ignore[attr-defined]
        return future

    def _forget(self, request_id: int) -> None:
        with self._pending_lock:
            self._pending.pop(request_id, None)
            self._protocol.forget(request_id)

    def request(self, packet_type: PacketType, body: messages.Body | dict | bytes | None = None,
                timeout: float | None = None) -> dict:
        """Send and wait for the reply; raises ApiError, ConnectionLost or TimeoutError."""
        future = self.request_async(packet_type, body)
        try:
            return future.result(timeout or self.request_timeout)
        except FutureTimeout:
            self._forget(future.request_id)  # type: ignore[attr-defined]
            raise TimeoutError(f"no answer to {packet_type.name} within {timeout or self.request_timeout} s") from None

    def send(self, packet_type: PacketType, body: messages.Body | dict | bytes | None = None) -> bool:
        """Fire and forget (typing, delivery receipts, binary packets)."""
        return self._link.send(self._protocol.event(packet_type, body))

    # -- bulk output (media frames, file chunks) ------------------------------------------------
    def send_frame(self, data: bytes | bytearray, recycle: bool = False) -> bool:
        """Queue a whole encoded frame (any thread); False if not connected. With ``recycle``
        the frame is a bytearray taken from ``buffers``, given back once sent."""
        return self._link.send(data, recycle)

    @property
    def queued_bytes(self) -> int:
        """Bytes queued for the server and not sent yet."""
        return self._link.out_size

    def wait_for_room(self, limit: int, timeout: float) -> bool:
        """Block until at most ``limit`` bytes are queued (or the link is down); False on timeout.
        A bulk sender calls it before each frame so control traffic never waits long behind it."""
        return self._link.wait_for_room(limit, timeout)

    @property
    def running(self) -> bool:
        """Whether the network thread runs: False once the kernel is closed."""
        return self._link.is_alive()

    # -- session ----------------------------------------------------------------------------------
    def connect(self) -> dict:
        """Connect to the first server that answers HELLO (in turn from the one last used);
        raises ConnectError (naming every server tried when there are several), NotAMeetingServer,
        ConnectionLost (the only server refused us) or ApiError."""
        if self._closed:
            raise ConnectError("this client has been closed")
        if not self._link.is_alive():
            self._link.start()
        self.state = SessionState.CONNECTING
        self._hello_done = False
        failures: list[tuple[str, Exception]] = []
        for _ in self.servers:
            try:
                info = self._connect_here()
            except (ConnectError, ConnectionLost) as exc:
                failures.append((self._address(), exc))
                self._next_server()
                continue
            self.state = SessionState.CONNECTED
            return info
        self.state = SessionState.OFFLINE
        if len(failures) == 1:
            raise failures[0][1]
        raise ConnectError("; ".join(str(exc) if isinstance(exc, ConnectError) else f"{address}: {exc}"
                                     for address, exc in failures))

    def _connect_here(self) -> dict:
        """Connect to the current server and exchange HELLO."""
        self._link.connect(self.host, self.port, timeout=self.request_timeout)
        try:
            info = self.request(PacketType.HELLO, self._hello_body())
        except ConnectionLost as exc:
            if str(exc).startswith(PROTOCOL_ERROR_REASON):
                raise NotAMeetingServer(f"{self._address()} is not a meeting server: it answered in another "
                                        "protocol (or speaks TLS)") from None
            raise ConnectionLost(self._hello_lost(str(exc))) from None
        except TimeoutError:
            raise NotAMeetingServer(f"{self._address()} did not answer as a meeting server within "
                                    f"{self.request_timeout:g} s") from None
        self._apply_hello(info)
        return info

    def _address(self) -> str:
        return format_address(self.servers[self._server])

    def _hello_lost(self, reason: str) -> str:
        """Why the connection dropped before HELLO was answered, for the user. A server that
        speaks only TLS drops a plain connection without a word: say so."""
        if self._link.ssl_context is None:
            return (f"{reason}: the server closed the connection before answering; it may require TLS "
                    "(connect with TLS: --tls-ca or --tls-pin)")
        return reason

    def _hello_body(self) -> dict:
        return {"version": limits.PROTOCOL_VERSION, "client": CLIENT_NAME}

    def _apply_hello(self, info: dict) -> None:
        self.server_info = info
        self.heartbeat_interval = float(info.get("heartbeat_interval", 10.0))
        self.heartbeat_timeout = float(info.get("heartbeat_timeout", 30.0))
        self._hello_done = True
        self._last_heartbeat = time.monotonic()

    def _ensure_connected(self) -> None:
        if not self._link.connected or not self._hello_done:
            self.connect()

    def register(self, phone: str, password: str, nickname: str) -> dict:
        body = {"phone": normalize_phone(phone), "password": check_password(password),
                "nickname": normalize_nickname(nickname)}
        self._ensure_connected()
        return self.request(PacketType.REGISTER, body, timeout=max(30.0, self.request_timeout))["user"]

    def login(self, phone: str, password: str) -> dict:
        body = {"phone": normalize_phone(phone), "password": password}
        self._ensure_connected()
        reply = self.request(PacketType.LOGIN, body, timeout=max(30.0, self.request_timeout))
        self._logged_in(reply, resumed=False)
        return self.user or {}

    def resume(self, token: str) -> dict:
        """Log in with a session token kept from an earlier login ("Remember me"); raises
        ApiError INVALID_TOKEN when that session has ended."""
        self._ensure_connected()
        reply = self.request(PacketType.RESUME, {"token": token})
        self._logged_in(reply, resumed=False)
        return self.user or {}

    def _logged_in(self, reply: dict, resumed: bool) -> None:
        self.user = reply["user"]
        self.token = reply["token"]
        self._want_session = True
        self._attempt = 0
        self.state = SessionState.ONLINE
        self.emit(EventKind.RECONNECTED if resumed else EventKind.LOGGED_IN, user=self.user)
        for hook in list(self.session_hooks):
            self.run_task(self._run_hook, hook, resumed)

    @staticmethod
    def _run_hook(hook: Callable[[bool], None], resumed: bool) -> None:
        try:
            hook(resumed)
        except (ConnectionLost, TimeoutError) as exc:
            log.info("session hook %s interrupted: %s", getattr(hook, "__name__", hook), exc)
        except Exception:
            log.exception("session hook %s failed", getattr(hook, "__name__", hook))

    def logout(self) -> None:
        self._want_session = False
        try:
            if self._link.connected:
                self.request(PacketType.LOGOUT, {}, timeout=5.0)
        except (ApiError, ConnectionLost, TimeoutError):
            pass
        self._link.drop("logged out")
        self._hello_done = False   # the next login connects again (after the drop: commands run in order)
        self.user = None
        self.token = None
        self.state = SessionState.OFFLINE
        self.emit(EventKind.LOGGED_OUT)

    def close(self) -> None:
        """Stop everything (the session stays valid on the server until it expires)."""
        self._closed = True
        self._want_session = False
        self._link.stop()
        if self._link.is_alive() and threading.current_thread() is not self._link:
            self._link.join(timeout=5)
        self._tasks.shutdown(wait=False, cancel_futures=True)
        self._fail_pending("client closed")
        self.state = SessionState.OFFLINE

    # -- LinkHandler (network thread) --------------------------------------------------------------
    def on_connected(self) -> None:
        if self._want_session and self.token:
            self._resume()

    def on_frame(self, frame: Frame) -> None:
        with self._pending_lock:
            event = self._protocol.receive_frame(frame)
            future = self._pending.pop(event.request_id, None) if isinstance(event, (Reply, Failure)) else None
        if isinstance(event, Reply):
            if future is not None:
                future.set_result(event.body)
        elif isinstance(event, Failure):
            if future is not None:
                future.set_exception(event.error)
        elif isinstance(event, BinaryEvent):
            binary = self._binary_handlers.get(event.type)
            if binary is not None:
                binary(event.body)
        elif isinstance(event, ServerEvent):
            handler = self._packet_handlers.get(event.type)
            if handler is not None:
                try:
                    handler(event.body if isinstance(event.body, dict) else messages.to_dict(event.body))
                except Exception:
                    log.exception("handling %s failed", PacketType(event.type).name)
        elif isinstance(event, Refusal):
            error = event.error
            self.emit(EventKind.SERVER_ERROR, code=int(error.code), name=error.code.name, message=error.message)
        elif isinstance(event, BadEvent):
            log.warning("bad %s body from server: %s", PacketType(event.type).name, event.reason)

    def on_disconnected(self, reason: str) -> None:
        self._hello_done = False
        self._fail_pending(reason)
        reconnect = self._want_session and self.reconnect_enabled
        self.state = SessionState.RECONNECTING if reconnect else SessionState.OFFLINE
        self.emit(EventKind.DISCONNECTED, reason=reason, will_reconnect=self.state == SessionState.RECONNECTING)
        if self.state == SessionState.RECONNECTING:
            self._schedule_reconnect(first=True, at_least=self._reconnect_floor)
            self._reconnect_floor = 0.0

    def on_tick(self, now: float) -> None:
        if self._link.connected:
            if self._hello_done and now - self._last_heartbeat >= self.heartbeat_interval:
                self._last_heartbeat = now
                self._send_heartbeat(now)
            if now - self._link.last_recv > self.heartbeat_timeout:
                self._link.drop(f"the server was silent for {self.heartbeat_timeout:g} s")
        elif self._reconnect_at is not None and now >= self._reconnect_at and self._want_session:
            self._reconnect_at = None
            self._attempt += 1
            try:
                self._link.open_now(self.host, self.port, timeout=5.0)
            except ConnectError as exc:
                self.emit(EventKind.RECONNECT_FAILED, attempt=self._attempt, reason=str(exc), server=self._address())
                self._next_server()
                self._schedule_reconnect()

    def _send_heartbeat(self, sent: float) -> None:
        future = self.request_async(PacketType.HEARTBEAT, {})
        def done(fut: Future) -> None:
            if not fut.exception():
                self.last_rtt = time.monotonic() - sent
                self.emit(EventKind.HEARTBEAT, rtt=self.last_rtt)
        future.add_done_callback(done)

    def _schedule_reconnect(self, first: bool = False, at_least: float = 0.0) -> None:
        delay = 0.05 if first and self._attempt == 0 else min(self.backoff_max, self.backoff_base * 2 ** self._attempt)
        delay = max(at_least, random.uniform(delay / 2, delay))  # jitter: no reconnect herd
        self._reconnect_at = time.monotonic() + delay
        self.emit(EventKind.RECONNECTING, attempt=self._attempt + 1, delay=round(delay, 2), server=self._address())

    def _resume(self) -> None:
        """Network thread, right after a reconnect: HELLO then RESUME, chained without waiting."""
        def after_hello(fut: Future) -> None:
            error = fut.exception()
            if error is not None:
                reason = self._hello_lost(str(error)) if isinstance(error, ConnectionLost) else str(error)
                self._next_server()
                self._link.drop(f"HELLO failed: {reason}")
                return
            self._apply_hello(fut.result())
            resume = self.request_async(PacketType.RESUME, {"token": self.token})
            resume.add_done_callback(after_resume)

        def after_resume(fut: Future) -> None:
            error = fut.exception()
            if error is None:
                self._logged_in(fut.result(), resumed=True)
            elif isinstance(error, ApiError) and error.code == ErrorCode.INVALID_TOKEN:
                self._want_session = False
                self.token = None
                self.state = SessionState.OFFLINE
                self.emit(EventKind.SESSION_EXPIRED, message=error.message)
                self._link.drop("session expired")
            else:
                self._next_server()
                self._link.drop(f"resume failed: {error}")

        self.request_async(PacketType.HELLO, self._hello_body()).add_done_callback(after_hello)

    def _fail_pending(self, reason: str) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
            self._protocol.connection_lost()
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))

    def _on_kicked(self, body: dict) -> None:
        self._want_session = False
        self.token = None
        self.state = SessionState.OFFLINE
        self.emit(EventKind.KICKED, reason=body.get("reason", ""), address=body.get("address", ""),
                  time=body.get("time", 0))

    def _on_going_away(self, body: dict) -> None:
        self.emit(EventKind.GOING_AWAY, reason=body.get("reason", ""))
        retry = float(body.get("retry_after", 1.0)) if isinstance(body.get("retry_after"), (int, float)) else 1.0
        self._next_server()             # this one is stopping: the next (if any) takes the session
        self._reconnect_floor = retry
