"""One client connection, owned by the reactor thread.

It reads into a frame decoder, queues decoded frames for the mediator (which handles them in
arrival order), and keeps an output queue with high/low water marks: reading pauses while the
peer does not read its own replies.

Reads go into the reactor's one receive buffer; a connection keeps only the bytes of a frame
not yet complete. Writes are gathered: ``send`` queues (small frames coalesced into shared
chunks, see ``SendQueue``) and asks the reactor to flush the connection once, at the end of
the loop iteration, with one ``sendmsg`` for everything queued. Write interest is on only
while the socket refuses bytes.

Before login a peer gets little of either: one small read per wake-up (sized so that it holds
at most as many frames as its inbox has room for) and a small output high water mark, so a
peer that floods requests and never reads the replies holds tens of KiB of server memory.
"""
from __future__ import annotations

import collections
import logging
import selectors
import socket
import ssl
import time
from typing import TYPE_CHECKING, Callable, Protocol

from common import frame as wire
from common.errors import ApiError, ErrorCode
from common.frame import HEADER, Frame, FrameDecoder, FrameTooLarge, ProtocolError
from common.sendqueue import SendQueue

if TYPE_CHECKING:
    from .config import ServerConfig
    from .reactor import Reactor

log = logging.getLogger("server.connection")

READ_BUDGET = 4 * 1024 * 1024     # bytes read per wake-up before yielding to other peers
MAX_INBOX = 64                    # frames waiting behind a busy handler before reading pauses
MAX_INBOX_BEFORE_LOGIN = 4        # the same before login: an anonymous peer cannot queue much
HIGH_WATER_BEFORE_LOGIN = 64 * 1024   # output queued before login at which reading pauses
DISCARD_CHUNK = 64 * 1024         # bytes per read while discarding input at close
MAX_VIOLATIONS = 20               # protocol errors before the peer is dropped
LINGER = 2.0                      # seconds a graceful close waits for the peer's end of stream


class FramePump(Protocol):
    """Handles the frames a connection decoded (server/mediator.py's ``Mediator``)."""

    def pump(self, conn: Connection) -> None: ...


class BodyLimits(Protocol):
    """The largest body buffered for a packet type (server/ratelimit.py's ``FrameLimits``)."""

    def max_body(self, packet_type: int, authenticated: bool) -> int: ...


class ConnectionOwner(Protocol):
    """What a connection uses of the server that accepted it (server/app.py's ``Server``), named
    here so that this module does not import the one that builds everything."""

    @property
    def config(self) -> ServerConfig: ...

    @property
    def reactor(self) -> Reactor: ...

    @property
    def mediator(self) -> FramePump: ...

    @property
    def frame_limits(self) -> BodyLimits: ...

    def next_connection_id(self) -> int: ...

    def connection_closed(self, conn: Connection, reason: str) -> None: ...


class Connection:
    def __init__(self, server: ConnectionOwner, sock: socket.socket, address: tuple) -> None:
        self.server = server
        self._config = server.config
        self.sock = sock
        self.id = server.next_connection_id()
        self.peer = f"{address[0]}:{address[1]}"
        self.address = address[0]
        self.decoder = FrameDecoder(self._max_body, scratch=server.reactor.read_buffer)
        self.inbox: collections.deque[Frame] = collections.deque()
        self.busy = False
        self.out = SendQueue()
        self._flush_pending = False       # the reactor will flush this connection this iteration
        self._write_blocked = False       # the socket refused bytes: wait until it is writable
        self.user_id: int | None = None
        self.nickname = ""
        self.avatar: dict = {}          # {"builtin", "version"}: shown on a meeting tile
        self.token_hash: str | None = None
        self.kicked = False
        self.hello_version = 0
        self.closed = False
        self.closing = False
        self.lingering = False
        self.close_reason = ""
        self.created = time.monotonic()
        self.last_recv = self.created    # last read from the peer, or last frame of its taken from the inbox
        self.violations = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0
        self.frames_out = 0
        self._tls = isinstance(sock, ssl.SSLSocket)
        self.handshaking = self._tls
        self._events = 0
        self._above_high_water = False
        self.drain_callbacks: list[Callable[["Connection"], None]] = []
        self.close_callbacks: list[Callable[["Connection"], None]] = []
        self._update_interest()

    # -- logging ------------------------------------------------------------------------------
    @property
    def who(self) -> str:
        user = f"user={self.user_id}" if self.user_id is not None else "user=-"
        return f"peer={self.peer} {user}"

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.who}>"

    def _max_body(self, packet_type: int) -> int:
        return self.server.frame_limits.max_body(packet_type, self.user_id is not None)

    # -- selector interest ----------------------------------------------------------------------
    @property
    def out_size(self) -> int:
        """Bytes queued for the peer."""
        return self.out.size

    @property
    def high_water(self) -> int:
        return self._config.output_high_water if self.user_id is not None else HIGH_WATER_BEFORE_LOGIN

    @property
    def reading_paused(self) -> bool:
        inbox_limit = MAX_INBOX if self.user_id is not None else MAX_INBOX_BEFORE_LOGIN
        if self.lingering:
            return False
        return self.closing or len(self.inbox) >= inbox_limit or self.out.size > self.high_water

    def _update_interest(self) -> None:
        if self.closed:
            return
        events = 0
        if self.handshaking:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._handshake_wants_write else 0)
        else:
            if not self.reading_paused:
                events |= selectors.EVENT_READ
            if self._write_blocked:
                events |= selectors.EVENT_WRITE
        if events == self._events:
            return
        if events & ~self._events & selectors.EVENT_READ:
            self._read_tls_pending()
        self.server.reactor.set_events(self.sock, self, events, self._events)
        self._events = events

    _handshake_wants_write = False

    def _do_handshake(self) -> None:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._handshake_wants_write = False
        except ssl.SSLWantWriteError:
            self._handshake_wants_write = True
        except (ssl.SSLError, OSError) as exc:
            self.close(f"TLS handshake failed: {exc.__class__.__name__}: {exc}")
            return
        else:
            self.handshaking = False
            log.debug("%s TLS established (%s)", self.who, self.sock.version())
            if self.out:
                self._flush_pending = True
                self.server.reactor.flush_soon(self)
        self._update_interest()

    # -- reading ------------------------------------------------------------------------------------
    def on_readable(self) -> None:
        if self.lingering:
            self._discard_input()
            return
        if self.handshaking:
            self._do_handshake()
            if self.handshaking or self.closed:
                return
        budget = READ_BUDGET
        while budget > 0 and not self.closed:
            logged_in = self.user_id is not None
            buffer = self.decoder.read_buffer(self._read_size(logged_in))
            try:
                received = self.sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                break
            except (ConnectionError, OSError, ssl.SSLError) as exc:
                self.close(f"read error: {exc.__class__.__name__}")
                return
            if not received:
                self.close("closed by peer")
                return
            budget -= received
            self.bytes_in += received
            self.last_recv = time.monotonic()
            try:
                frames = self.decoder.commit(received)
            except FrameTooLarge as exc:
                self.send(wire.encode_error(ApiError(ErrorCode.TOO_LARGE, str(exc), type=exc.packet_type,
                                                     limit=exc.limit)))
                self.close_after_flush(f"protocol error: {exc}", deadline=1.0)
                return
            except ProtocolError as exc:
                self.close(f"protocol error: {exc}")
                return
            if frames:
                self.frames_in += len(frames)
                self.inbox.extend(frames)
                self.server.mediator.pump(self)
            if self.reading_paused or not logged_in:
                break
            if not self._tls and received < len(buffer):
                break
        self._update_interest()
        self._read_tls_pending()

    def _read_tls_pending(self) -> None:
        """Bytes the TLS layer has decrypted but we have not read are invisible to select:
        read them in a later call instead of waiting for the socket to become readable."""
        if self._tls and not self.closed and not self.handshaking and not self.reading_paused \
                and self.sock.pending():
            self.server.reactor.call_soon(self.on_readable)

    def _read_size(self, logged_in: bool) -> int:
        """Bytes to read now. Before login: as many frame headers as the inbox has room for,
        or the rest of the frame in progress if that is more, so no read holds more frames
        than the pre-login inbox may queue."""
        if logged_in:
            return len(self.server.reactor.read_buffer)
        room = max(1, MAX_INBOX_BEFORE_LOGIN - len(self.inbox))
        return max(room * HEADER.size, self.decoder.missing)

    def handled(self) -> None:
        """The mediator finished a frame outside ``on_readable``: reading may resume."""
        self._update_interest()

    def violation(self, reason: str) -> None:
        self.violations += 1
        log.info("%s protocol violation %d: %s", self.who, self.violations, reason)
        if self.violations >= MAX_VIOLATIONS:
            self.close(f"too many protocol violations (last: {reason})")

    # -- writing ------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue bytes for the peer (reactor thread only). Never drops: a peer that lets its
        queue pass the hard limit is disconnected instead."""
        if self.closed or self.lingering:   # lingering: our end of the stream is already sent
            return
        out = self.out
        out.append(data)
        self.frames_out += 1
        if out.size > self._config.output_hard_limit:
            self.close(f"slow reader: {out.size} bytes queued")
            return
        if not self._flush_pending and not self._write_blocked and not self.handshaking:
            self._flush_pending = True
            self.server.reactor.flush_soon(self)
        if out.size > self.high_water:
            self._above_high_water = True
            if self._events & selectors.EVENT_READ:
                self._update_interest()

    @property
    def congested(self) -> bool:
        return self.out.size > self.high_water

    def on_writable(self) -> None:
        if self.handshaking:
            self._do_handshake()
            return
        self.flush()
        if self.inbox and not self.busy and not self.closed and not self.congested:
            self.server.mediator.pump(self)
            self._update_interest()

    def flush(self) -> None:
        """Write what is queued with one system call (the reactor calls this once per loop
        iteration for each connection that queued output)."""
        self._flush_pending = False
        if self.closed or self.handshaking:
            return
        if not self.out:
            if self._write_blocked:
                self._write_blocked = False
                self._update_interest()
            return
        try:
            sent = self.out.write(self.sock)
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            self.close(f"write error: {exc.__class__.__name__}")
            return
        self.bytes_out += sent
        out = self.out
        if self._above_high_water and out.size <= self._config.output_low_water:
            self._above_high_water = False
            for callback in list(self.drain_callbacks):
                callback(self)
        if self.closing and not out:
            self._linger(self.close_reason)
        blocked = bool(out)
        # the selector needs telling only if writability changed or reading may resume
        if blocked != self._write_blocked or not self._events & selectors.EVENT_READ:
            self._write_blocked = blocked
            self._update_interest()

    # -- closing ------------------------------------------------------------------------------------
    def close_after_flush(self, reason: str, deadline: float = 5.0) -> None:
        """Stop reading, send what is queued, then close (or close at the deadline)."""
        if self.closed or self.closing:
            return
        self.closing = True
        self.close_reason = reason
        if not self.out:
            self._linger(reason)
            return
        self.server.reactor.call_later(deadline, self.close, reason + " (flush deadline)")
        self._update_interest()

    def _linger(self, reason: str) -> None:
        """Everything queued is sent: send our end of stream, then read and discard until the
        peer closes too (at most LINGER s). Closing at once while the peer is still sending
        would answer its data with a reset, which can destroy the last packets we sent
        (GOING_AWAY, KICKED) before the peer reads them."""
        if self.closed or self.lingering:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(reason)
            return
        self.lingering = True
        self.server.reactor.call_later(LINGER, self.close, reason)
        self._update_interest()

    def _discard_input(self) -> None:
        for _ in range(16):
            try:
                data = self.sock.recv(DISCARD_CHUNK)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (OSError, ssl.SSLError):
                break
            if not data:
                break
        else:
            return
        self.close(self.close_reason)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._events:
            self.server.reactor.remove(self.sock)
            self._events = 0
        try:
            self.sock.close()
        except OSError:
            pass
        log.info("%s closed: %s", self.who, reason)
        self.inbox.clear()
        self.out.clear()
        for callback in self.close_callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("%s error in a close callback", self.who)
        self.server.connection_closed(self, reason)
