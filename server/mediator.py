"""The mediator: maps packet types to handlers and runs them in arrival order per connection.

Each handler domain (server/handlers/) collects its handlers in ``Routes`` with
``@routes.handler(PacketType.X, blocking=..., auth=...)``; server.app hands them over with one
``mediator.register(domain.routes())``.
Inline handlers (pure routing) run on the reactor thread; blocking ones (database, hashing,
disk) run on the worker pool while the connection's later frames wait their turn. Whatever a
handler returns (a dict) is sent back as RESULT with the request's id; an ApiError becomes an
ERROR with its code; any other exception is logged and becomes INTERNAL.

A request with id 0 is fire and forget: it gets no RESULT, and an ERROR (with id 0) only when
it is malformed (``REPORTED_WITHOUT_ID``), never for a refusal. A peer that makes a
handler fail unexpectedly ``MAX_INTERNAL_ERRORS`` times is disconnected, and the traceback of
one cause is logged at most once a minute (server/faults.py).
Before a handler runs, its JSON body is decoded and validated against its definition in
``common.messages`` (one step: types, required fields, limits); the handler gets the typed
body and a body that does not fit is answered BAD_REQUEST here. A handler may return a dict
or a ``common.messages`` Struct.
"""
from __future__ import annotations

import logging
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from common import frame as wire
from common import messages
from common.errors import ApiError, ErrorCode
from common.frame import ProtocolError
from common.packets import BINARY_TYPES, PacketType, type_name

from .faults import FaultLog

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from .connection import Connection
    from .reactor import Reactor
    from .stats import Stats

log = logging.getLogger("server.mediator")

PRE_LOGIN_TYPES = frozenset({PacketType.HELLO, PacketType.REGISTER, PacketType.LOGIN,
                             PacketType.RESUME, PacketType.HEARTBEAT})
MAX_INTERNAL_ERRORS = 3   # unexpected handler failures one connection may cause before it is dropped
# Errors a fire-and-forget request (id 0) still gets: the client has a bug it should hear about.
REPORTED_WITHOUT_ID = frozenset({ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE, ErrorCode.NOT_AUTHENTICATED})


class UnexpectedFailure(ApiError):
    """INTERNAL sent for a handler's bug (an exception it did not expect, a reply it could not
    encode), as opposed to a refusal the handler chose to make (a disk error, say)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(ErrorCode.INTERNAL, message)



@dataclass(slots=True)
class Request:
    """One incoming packet with everything a handler may use."""

    reactor: "Reactor"
    conn: "Connection"
    type: int
    request_id: int
    body: Any  # the common.messages Struct of a JSON packet, bytes for a binary one
    raw: bytes

    @property
    def user_id(self) -> int:
        assert self.conn.user_id is not None
        return self.conn.user_id

    def on_reactor(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the reactor thread; it runs before this request's reply is sent."""
        self.reactor.call_here_or_soon(fn, *args)

    def send(self, packet_type: int, body: messages.Body | dict | None = None) -> None:
        """Send an event to this request's own connection (thread-safe)."""
        self.on_reactor(self.conn.send, wire.encode_json(packet_type, body))


@dataclass(frozen=True)
class HandlerSpec:
    fn: Callable[[Request], Any]
    blocking: bool
    auth: bool


class Routes:
    """The handlers of one domain, as its ``routes()`` builds them for ``Mediator.register``."""

    def __init__(self) -> None:
        self.specs: dict[PacketType, HandlerSpec] = {}

    def handler(self, packet_type: PacketType, *, blocking: bool = False, auth: bool = True
                ) -> Callable[[Callable[[Request], Any]], Callable[[Request], Any]]:
        def add(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
            if packet_type in self.specs:
                raise ValueError(f"two handlers for {packet_type.name}")
            self.specs[packet_type] = HandlerSpec(fn, blocking, auth)
            return fn
        return add


class Mediator:
    def __init__(self, reactor: "Reactor", pool: "Executor", stats: "Stats") -> None:
        self.reactor = reactor
        self.pool = pool
        self.stats = stats
        self.handlers: dict[int, HandlerSpec] = {}
        self.faults = FaultLog(log)
        self._internal_errors: weakref.WeakKeyDictionary["Connection", int] = weakref.WeakKeyDictionary()

    def register(self, routes: Routes) -> None:
        """Take a domain's handlers; a packet type has one handler in the whole server."""
        for packet_type, spec in routes.specs.items():
            if packet_type in self.handlers:
                raise ValueError(f"two handlers for {packet_type.name}")
            if not spec.auth and packet_type not in PRE_LOGIN_TYPES:
                raise ValueError(f"{packet_type.name} cannot be allowed before login")
            if packet_type not in BINARY_TYPES and packet_type not in messages.REQUESTS:
                raise ValueError(f"{packet_type.name} has no body definition in common.messages")
            self.handlers[packet_type] = spec

    # -- dispatch ------------------------------------------------------------------------------
    def pump(self, conn: "Connection") -> None:
        """Handle queued frames in order until one needs the pool, or until the peer's own
        output backs up (it is not reading its replies: slow it down). Nothing more is handled
        once the connection is closing or its session was taken over. Reactor thread; the
        caller then lets the connection update its interest (reading may resume)."""
        inbox = conn.inbox
        if inbox:
            conn.last_recv = time.monotonic()   # frames that waited for us: the peer was not silent
        while inbox and not conn.busy and not conn.closed and not conn.closing and not conn.kicked \
                and not conn.congested:
            self._dispatch(conn, inbox.popleft())

    def _dispatch(self, conn: "Connection", frame: wire.Frame) -> None:
        if conn.user_id is None and frame.type not in PRE_LOGIN_TYPES:
            self._error(conn, frame.request_id, ApiError(ErrorCode.NOT_AUTHENTICATED))
            conn.violation(f"{type_name(frame.type)} before login")
            return
        spec = self.handlers.get(frame.type)
        if spec is None:
            self._error(conn, frame.request_id, ApiError(ErrorCode.UNKNOWN_TYPE,
                                                         f"unknown packet type {frame.type}"))
            conn.violation(f"unknown packet type {frame.type}")
            return
        if spec.auth and conn.user_id is None:
            self._error(conn, frame.request_id, ApiError(ErrorCode.NOT_AUTHENTICATED))
            return
        if frame.type in BINARY_TYPES:
            body: Any = frame.body
        else:
            try:
                body = messages.decode_request(frame.type, frame.body)
            except ApiError as exc:
                self._error(conn, frame.request_id, exc)
                conn.violation(f"{type_name(frame.type)}: {exc.message}")
                return
        request = Request(self.reactor, conn, frame.type, frame.request_id, body, frame.body)
        if not spec.blocking:
            self._complete(request, *self._call(spec.fn, request))
            return
        conn.busy = True
        self.stats.pool_submitted += 1
        future = self.pool.submit(self._call, spec.fn, request)
        future.add_done_callback(
            lambda fut: self.reactor.call_soon_threadsafe(self._finish_blocking, request, fut))

    def _finish_blocking(self, request: Request, future: Future) -> None:
        conn = request.conn
        conn.busy = False
        self.stats.pool_completed += 1
        self._complete(request, *future.result())
        self.pump(conn)
        conn.handled()

    def _complete(self, request: Request, result: Any, error: ApiError | None) -> None:
        conn = request.conn
        if conn.closed:
            return
        if error is None:
            if result is not None:
                self.send_result(conn, request.request_id, result, type_name(request.type))
            return
        self.send_error(conn, request.request_id, error)
        if error.code == ErrorCode.BAD_REQUEST:
            conn.violation(f"{type_name(request.type)}: {error.message}")

    def send_result(self, conn: "Connection", request_id: int, body: messages.Body | dict,
                    what: str = "request") -> None:
        """Reactor thread: the RESULT of a request (nothing for a fire-and-forget id 0). A body
        that cannot be encoded (too large for a frame, not JSON: a handler's bug) is answered
        with INTERNAL instead, so the request is never left without a reply."""
        if not request_id or conn.closed:
            return
        try:
            data = wire.encode_json(PacketType.RESULT, body, request_id)
        except (ProtocolError, TypeError, ValueError) as exc:
            self.faults.failed(f"reply to {what}", conn.who, exc)
            self.send_error(conn, request_id, UnexpectedFailure("the server could not encode its reply"))
            return
        conn.send(data)

    def send_error(self, conn: "Connection", request_id: int, error: ApiError) -> None:
        """Reactor thread: the ERROR of a request (for id 0 only if it is malformed). Unexpected
        failures count against the peer."""
        self._error(conn, request_id, error)
        if isinstance(error, UnexpectedFailure) and not conn.closed:
            self._internal_error(conn)

    def _internal_error(self, conn: "Connection") -> None:
        """Count an unexpected failure caused by this peer; drop it after a few."""
        count = self._internal_errors.get(conn, 0) + 1
        self._internal_errors[conn] = count
        if count >= MAX_INTERNAL_ERRORS:
            conn.close_after_flush(f"{count} requests failed with an internal error", deadline=1.0)

    @staticmethod
    def _error(conn: "Connection", request_id: int, error: ApiError) -> None:
        if (request_id or error.code in REPORTED_WITHOUT_ID) and not conn.closed:
            conn.send(wire.encode_error(error, request_id))

    def _call(self, fn: Callable[[Request], Any], request: Request) -> tuple[Any, ApiError | None]:
        """Run a handler; never raises (runs on the pool or the reactor)."""
        try:
            return fn(request), None
        except ApiError as exc:
            return None, exc
        except Exception as exc:
            self.faults.failed(f"handler for {type_name(request.type)}", request.conn.who, exc)
            return None, UnexpectedFailure()
